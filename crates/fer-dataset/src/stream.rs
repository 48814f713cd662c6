//! Batches in a fixed order, prepared on a loader thread while the device computes.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use crate::{FaceBatch, FaceBatcher, FaceItem, SplitData};
use burn::data::dataloader::batcher::Batcher;
use burn::prelude::Backend;

/// An iterator of [`FaceBatch`]es over `order` (positions in a split), built `prefetch` batches
/// ahead on a loader thread.
///
/// Unlike Burn's multi-threaded `DataLoader`, whose workers deliver batches in whatever order
/// they finish, the order here is exactly `order`: a seeded run takes the same steps every time.
pub struct BatchStream<B: Backend> {
    batches: Receiver<FaceBatch<B>>,
    loader: Option<JoinHandle<()>>,
}

impl<B: Backend> BatchStream<B> {
    /// Starts the loader thread.
    pub fn new(
        split: Arc<SplitData>,
        order: Vec<usize>,
        batch_faces: usize,
        batcher: FaceBatcher,
        prefetch: usize,
        device: B::Device,
    ) -> BatchStream<B> {
        let (sender, batches) = sync_channel(prefetch.max(1));
        let loader = std::thread::spawn(move || {
            for chunk in order.chunks(batch_faces.max(1)) {
                let items: Vec<FaceItem> = chunk
                    .iter()
                    .map(|&index| FaceItem { index, label: split.label(index), image: split.image(index).clone() })
                    .collect();
                let batch: FaceBatch<B> = batcher.batch(items, &device);
                if sender.send(batch).is_err() {
                    return; // the consumer stopped early
                }
            }
        });
        BatchStream { batches, loader: Some(loader) }
    }
}

impl<B: Backend> Iterator for BatchStream<B> {
    type Item = FaceBatch<B>;

    fn next(&mut self) -> Option<FaceBatch<B>> {
        match self.batches.recv() {
            Ok(batch) => Some(batch),
            Err(_) => {
                if let Some(loader) = self.loader.take()
                    && let Err(panic) = loader.join()
                {
                    std::panic::resume_unwind(panic);
                }
                None
            }
        }
    }
}
