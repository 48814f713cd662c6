//! Burn glue: a [`Dataset`] of faces, a [`Batcher`] that crops them into tensors, and a loader.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::Dataset;
use burn::prelude::*;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use crate::{Augmentation, CropWindow, Emotion, FACE_SIDE, FaceImage, SplitData, View};

/// One labelled face and its position in its split (the position seeds its augmentation).
#[derive(Debug, Clone)]
pub struct FaceItem {
    /// Position in the split.
    pub index: usize,
    /// Expression label.
    pub label: Emotion,
    /// The 48×48 face.
    pub image: FaceImage,
}

/// A split as a Burn [`Dataset`]; cheap to clone (the faces are shared).
#[derive(Debug, Clone)]
pub struct FaceDataset {
    split: Arc<SplitData>,
}

impl FaceDataset {
    /// Wraps a split.
    pub fn new(split: Arc<SplitData>) -> FaceDataset {
        FaceDataset { split }
    }
}

impl Dataset<FaceItem> for FaceDataset {
    fn get(&self, index: usize) -> Option<FaceItem> {
        (index < self.split.len()).then(|| FaceItem {
            index,
            label: self.split.label(index),
            image: self.split.image(index).clone(),
        })
    }

    fn len(&self) -> usize {
        self.split.len()
    }
}

/// A batch: `images` is `[N × crops_per_face, 1, S, S]` in `[0, 1]`, the crops of face `i` at rows
/// `i × crops_per_face ..`; `targets` is `[N]` class indices.
#[derive(Debug, Clone)]
pub struct FaceBatch<B: Backend> {
    /// Cropped faces.
    pub images: Tensor<B, 4>,
    /// Class index per face (not per crop).
    pub targets: Tensor<B, 1, Int>,
    /// Crops per face: 10 for TenCrop, else 1. Average logits over groups of this many rows.
    pub crops_per_face: usize,
}

/// Turns [`FaceItem`]s into a [`FaceBatch`] with a [`View`].
///
/// Random views are reproducible whatever the number of loader threads: the crop of face `i`
/// on its `k`-th visit is drawn from a generator seeded by `(seed, i, k)`. Visits are counted
/// per face, so the k-th epoch sees the same crops in every run; [`FaceBatcher::set_epoch`]
/// restores the count when a run is resumed. [`FaceBatcher::with_augmentation`] adds rotation,
/// zoom and erasing to a random view's crops, drawn from the same generator, and
/// [`FaceBatcher::with_whole_faces`] makes a share of the batches whole 48×48 faces.
#[derive(Debug, Clone)]
pub struct FaceBatcher {
    view: View,
    seed: u64,
    visits: Arc<Vec<AtomicU32>>,
    augmentation: Augmentation,
    whole_face_pct: u32,
}

impl FaceBatcher {
    /// A batcher for a split of `faces` faces. Panics when [`View::check`] fails.
    pub fn new(view: View, seed: u64, faces: usize) -> FaceBatcher {
        if let Err(e) = view.check() {
            panic!("invalid view {view:?}: {e}");
        }
        let visits = if view.is_random() { (0..faces).map(|_| AtomicU32::new(0)).collect() } else { Vec::new() };
        FaceBatcher { view, seed, visits: Arc::new(visits), augmentation: Augmentation::NONE, whole_face_pct: 0 }
    }

    /// The same batcher with `augmentation` applied to each crop after its random placement and
    /// mirroring. Panics when [`Augmentation::check`] fails, or when the augmentation does
    /// something and the view is not random (evaluation views stay fixed functions of the face).
    pub fn with_augmentation(self, augmentation: Augmentation) -> FaceBatcher {
        if let Err(e) = augmentation.check() {
            panic!("invalid augmentation {augmentation:?}: {e}");
        }
        assert!(
            augmentation.is_none() || self.view.is_random(),
            "augmentation {augmentation:?} on the fixed view {:?}",
            self.view
        );
        FaceBatcher { augmentation, ..self }
    }

    /// The augmentation added to the random crops ([`Augmentation::NONE`] unless set).
    pub fn augmentation(&self) -> Augmentation {
        self.augmentation
    }

    /// The same batcher with about `pct` % of its batches made of whole 48×48 faces, each
    /// mirrored with probability ½ and augmented as the crops are, instead of random crops: a
    /// network trained on crops alone also learns the whole-face view that the reference's
    /// attack evaluation feeds it. Whether a batch is whole is drawn from a generator seeded by
    /// `(seed, its first face, that face's visit)`, so it is reproducible and resumable as the
    /// crops are; the batch's side is [`FaceBatcher::batch_side`].
    ///
    /// Panics when `pct > 100`, or when `pct > 0` and the view is not random.
    ///
    /// ```
    /// use fer_dataset::{Emotion, FaceBatcher, FaceItem, FaceImage, View};
    ///
    /// let batch: Vec<FaceItem> = (0..4)
    ///     .map(|index| FaceItem { index, label: Emotion::Happy, image: FaceImage::filled(128) })
    ///     .collect();
    /// // Every batch whole: 48×48 faces where the view alone would crop 44×44.
    /// let whole = FaceBatcher::new(View::RandomCropFlip(44), 7, 4).with_whole_faces(100);
    /// assert_eq!(whole.batch_side(&batch), 48);
    /// assert_eq!(whole.crops(&batch).len(), 4 * 48 * 48);
    /// // A quarter: each batch draws its side, the same again for the same seed and epoch.
    /// let quarter = || FaceBatcher::new(View::RandomCropFlip(44), 7, 4).with_whole_faces(25);
    /// assert!([44, 48].contains(&quarter().batch_side(&batch)));
    /// assert_eq!(quarter().batch_side(&batch), quarter().batch_side(&batch));
    /// ```
    pub fn with_whole_faces(self, pct: u32) -> FaceBatcher {
        assert!(pct <= 100, "whole faces in {pct} % of the batches: more than 100 %");
        assert!(pct == 0 || self.view.is_random(), "whole-face batches on the fixed view {:?}", self.view);
        FaceBatcher { whole_face_pct: pct, ..self }
    }

    /// The share of whole-face batches, in percent (0 unless set).
    pub fn whole_face_pct(&self) -> u32 {
        self.whole_face_pct
    }

    /// Side of the crops the next [`FaceBatcher::crops`] of `items` makes: 48 for a whole-face
    /// batch (see [`FaceBatcher::with_whole_faces`]), else the view's side.
    pub fn batch_side(&self, items: &[FaceItem]) -> usize {
        self.side(self.is_whole_face_batch(items))
    }

    /// Side of a batch's crops: 48 for whole faces, else the view's side.
    fn side(&self, whole: bool) -> usize {
        if whole { FACE_SIDE } else { self.view.side() }
    }

    /// Draws whether the batch that `items` starts is whole faces, from its first face's visit
    /// count before the batch is made (each face is in one batch a visit).
    fn is_whole_face_batch(&self, items: &[FaceItem]) -> bool {
        let (Some(first), true) = (items.first(), self.whole_face_pct > 0) else { return false };
        let visit = self.visits.get(first.index).map_or(0, |v| v.load(Ordering::Relaxed));
        let mut rng =
            ChaCha8Rng::seed_from_u64(mix(self.seed ^ WHOLE_FACE_STREAM, first.index as u64, u64::from(visit)));
        rng.random_range(0..100) < self.whole_face_pct
    }

    /// The view this batcher produces.
    pub fn view(&self) -> View {
        self.view
    }

    /// Sets every face's visit count to `epoch` (0-based), so the next batches draw the crops
    /// that epoch `epoch` of an uninterrupted run would have drawn.
    pub fn set_epoch(&self, epoch: u32) {
        for v in self.visits.iter() {
            v.store(epoch, Ordering::Relaxed);
        }
    }

    /// The crops of `items` as row-major `[len × crops, S, S]` floats in `[0, 1]`, `S` being
    /// [`FaceBatcher::batch_side`] (asked before this call).
    pub fn crops(&self, items: &[FaceItem]) -> Vec<f32> {
        self.side_and_crops(items).1
    }

    /// [`FaceBatcher::batch_side`] and [`FaceBatcher::crops`] of `items`, the batch's draw made
    /// once.
    fn side_and_crops(&self, items: &[FaceItem]) -> (usize, Vec<f32>) {
        let whole = self.is_whole_face_batch(items);
        let side = self.side(whole);
        let mut out = vec![0.0f32; items.len() * self.view.crops_per_face() * side * side];
        let mut chunks = out.chunks_exact_mut(side * side);
        for item in items {
            let visit = self.visits.get(item.index).map_or(0, |v| v.fetch_add(1, Ordering::Relaxed));
            let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seed, item.index as u64, u64::from(visit)));
            let windows = if whole {
                vec![CropWindow { top: 0, left: 0, size: FACE_SIDE, mirrored: rng.random_bool(0.5) }]
            } else {
                self.view.windows(&mut rng)
            };
            for window in windows {
                let chunk = chunks.next().expect("buffer sized for every crop");
                self.augmentation.write_scaled(&item.image, &window, &mut rng, chunk);
            }
        }
        (side, out)
    }
}

impl<B: Backend> Batcher<B, FaceItem, FaceBatch<B>> for FaceBatcher {
    fn batch(&self, items: Vec<FaceItem>, device: &B::Device) -> FaceBatch<B> {
        let crops = self.view.crops_per_face();
        let (side, pixels) = self.side_and_crops(&items);
        let images = Tensor::from_data(TensorData::new(pixels, [items.len() * crops, 1, side, side]), device);
        let labels: Vec<i64> = items.iter().map(|it| it.label.index() as i64).collect();
        let targets = Tensor::from_data(TensorData::new(labels, [items.len()]), device);
        FaceBatch { images, targets, crops_per_face: crops }
    }
}

/// A Burn data loader over `split`: batches of `batch_size`, reshuffled each epoch from
/// `shuffle_seed` when given, built by `workers` threads (0 = on the caller's thread).
pub fn face_loader<B: Backend>(
    split: Arc<SplitData>,
    batcher: FaceBatcher,
    batch_size: usize,
    shuffle_seed: Option<u64>,
    workers: usize,
    device: &B::Device,
) -> Arc<dyn DataLoader<B, FaceBatch<B>>> {
    let mut builder = DataLoaderBuilder::new(batcher).batch_size(batch_size).set_device(device.clone());
    if let Some(seed) = shuffle_seed {
        builder = builder.shuffle(seed);
    }
    if workers > 0 {
        builder = builder.num_workers(workers);
    }
    builder.build(FaceDataset::new(split))
}

/// Mixed into the seed of the whole-face draws, so they are a stream of their own.
const WHOLE_FACE_STREAM: u64 = 0x57B0_1E00_FACE_0000;

/// SplitMix64-style mixing of three words into one seed.
fn mix(a: u64, b: u64, c: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ c.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray;

    fn split(n: usize) -> Arc<SplitData> {
        let mut s = SplitData::new();
        for i in 0..n {
            let mut img = FaceImage::filled(0);
            for (k, p) in img.0.iter_mut().enumerate() {
                *p = ((k * 7 + i * 13) % 256) as u8;
            }
            s.push(Emotion::ALL[i % 7], img);
        }
        Arc::new(s)
    }

    fn items(split: &Arc<SplitData>) -> Vec<FaceItem> {
        let ds = FaceDataset::new(split.clone());
        (0..ds.len()).map(|i| ds.get(i).expect("in range")).collect()
    }

    #[test]
    fn batch_shapes_and_labels() {
        let s = split(6);
        let device = Default::default();
        let b: FaceBatch<B> = FaceBatcher::new(View::TenCrop(44), 0, s.len()).batch(items(&s), &device);
        assert_eq!(b.images.dims(), [60, 1, 44, 44]);
        assert_eq!(b.crops_per_face, 10);
        let t: Vec<i64> = b.targets.into_data().convert::<i64>().to_vec().expect("ints");
        assert_eq!(t, vec![0, 1, 2, 3, 4, 5]);
        let full: FaceBatch<B> = FaceBatcher::new(View::Full, 0, s.len()).batch(items(&s), &device);
        assert_eq!(full.images.dims(), [6, 1, 48, 48]);
        let max = full.images.clone().max().into_scalar();
        let min = full.images.min().into_scalar();
        assert!(min >= 0.0 && max <= 1.0 && max > 0.9, "scaled to [0,1]: {min}..{max}");
    }

    #[test]
    fn augmentation_is_seeded_per_face_and_epoch() {
        let s = split(20);
        let all = items(&s);
        let a = FaceBatcher::new(View::RandomCropFlip(44), 42, s.len());
        let epoch0 = a.crops(&all);
        let epoch1 = a.crops(&all);
        assert_ne!(epoch0, epoch1, "a new epoch draws new crops");

        // Another batcher, same seed, faces visited in another order and batching: same crops.
        let b = FaceBatcher::new(View::RandomCropFlip(44), 42, s.len());
        let mut reversed = all.clone();
        reversed.reverse();
        let mut by_face = b.crops(&reversed).chunks_exact(44 * 44).map(<[f32]>::to_vec).collect::<Vec<_>>();
        by_face.reverse();
        assert_eq!(by_face.concat(), epoch0);

        // Resuming at epoch 1 reproduces epoch 1.
        let c = FaceBatcher::new(View::RandomCropFlip(44), 42, s.len());
        c.set_epoch(1);
        assert_eq!(c.crops(&all), epoch1);

        let other_seed = FaceBatcher::new(View::RandomCropFlip(44), 43, s.len());
        assert_ne!(other_seed.crops(&all), epoch0);
    }

    #[test]
    fn strong_augmentation_is_seeded_resumable_and_keeps_the_crop_placement() {
        let s = split(12);
        let all = items(&s);
        let strong = || FaceBatcher::new(View::RandomCropFlip(44), 42, s.len()).with_augmentation(Augmentation::STRONG);
        let a = strong();
        assert_eq!(a.augmentation(), Augmentation::STRONG);
        let (epoch0, epoch1) = (a.crops(&all), a.crops(&all));
        assert_ne!(epoch0, epoch1);
        let resumed = strong();
        resumed.set_epoch(1);
        assert_eq!(resumed.crops(&all), epoch1, "resuming at epoch 1 reproduces it");
        let plain = FaceBatcher::new(View::RandomCropFlip(44), 42, s.len()).crops(&all);
        assert_ne!(plain, epoch0, "strong changes the crops");
        assert!(epoch0.iter().all(|v| (0.0..=1.0).contains(v)));
        // Nothing added: the plain batcher's crops, bit for bit (placement drawn first, the same).
        let none = FaceBatcher::new(View::RandomCropFlip(44), 42, s.len()).with_augmentation(Augmentation::NONE);
        assert_eq!(none.crops(&all), plain);
        // Only erasing: every crop is the plain one or the plain one with a black rectangle.
        let erase = Augmentation { erase_pct: 100, ..Augmentation::NONE };
        let erased = FaceBatcher::new(View::RandomCropFlip(44), 42, s.len()).with_augmentation(erase).crops(&all);
        assert!(erased.iter().zip(&plain).all(|(&e, &p)| e == p || e == 0.0));
        assert!(erased.iter().zip(&plain).filter(|(e, p)| e != p).count() > 12 * 30);
    }

    #[test]
    fn whole_face_batches_are_whole_mirrored_faces_drawn_reproducibly() {
        let s = split(40);
        let all = items(&s);
        let device = Default::default();
        // None asked for: the crops of the plain batcher, bit for bit.
        let plain = FaceBatcher::new(View::RandomCropFlip(44), 5, s.len()).crops(&all);
        let zero = FaceBatcher::new(View::RandomCropFlip(44), 5, s.len()).with_whole_faces(0);
        assert_eq!(zero.batch_side(&all), 44);
        assert_eq!(zero.crops(&all), plain);

        // All of them: each face whole, as it is or mirrored, both seen.
        let every = FaceBatcher::new(View::RandomCropFlip(44), 5, s.len()).with_whole_faces(100);
        assert_eq!(every.whole_face_pct(), 100);
        let b: FaceBatch<B> = every.batch(all.clone(), &device);
        assert_eq!(b.images.dims(), [40, 1, 48, 48]);
        let pixels: Vec<f32> = b.images.into_data().convert::<f32>().to_vec().expect("floats");
        let mut mirrored = 0;
        for (item, got) in all.iter().zip(pixels.chunks_exact(48 * 48)) {
            let view = |m: bool| {
                let mut out = vec![0.0f32; 48 * 48];
                CropWindow { top: 0, left: 0, size: 48, mirrored: m }.write_scaled(&item.image, &mut out);
                out
            };
            if got == view(true).as_slice() {
                mirrored += 1;
            } else {
                assert_eq!(got, view(false).as_slice(), "face {} is whole", item.index);
            }
        }
        assert!((8..=32).contains(&mirrored), "about half mirrored: {mirrored} of 40");

        // Half of them: one-face batches over three epochs, each batch's side drawn per face and
        // visit; another batcher with the same seed, resumed at epoch 1, draws the same sides.
        let half = || FaceBatcher::new(View::RandomCropFlip(44), 5, s.len()).with_whole_faces(50);
        let sides = |batcher: &FaceBatcher| -> Vec<usize> {
            all.iter()
                .map(|item| {
                    let one = std::slice::from_ref(item);
                    let side = batcher.batch_side(one);
                    assert_eq!(batcher.crops(one).len(), side * side);
                    side
                })
                .collect()
        };
        let a = half();
        let epochs: Vec<Vec<usize>> = (0..3).map(|_| sides(&a)).collect();
        let whole = epochs.concat().iter().filter(|&&side| side == 48).count();
        assert!((36..=84).contains(&whole), "about half of 120 batches whole: {whole}");
        assert_ne!(epochs[0], epochs[1], "each epoch draws anew");
        let resumed = half();
        resumed.set_epoch(1);
        assert_eq!(sides(&resumed), epochs[1]);
        let other_seed = FaceBatcher::new(View::RandomCropFlip(44), 6, s.len()).with_whole_faces(50);
        assert_ne!(sides(&other_seed), epochs[0]);
    }

    #[test]
    #[should_panic(expected = "whole-face batches on the fixed view")]
    fn whole_faces_of_an_evaluation_view_are_refused() {
        let _ = FaceBatcher::new(View::CenterCrop(44), 0, 4).with_whole_faces(25);
    }

    #[test]
    #[should_panic(expected = "more than 100 %")]
    fn whole_faces_above_all_batches_are_refused() {
        let _ = FaceBatcher::new(View::RandomCropFlip(44), 0, 4).with_whole_faces(101);
    }

    #[test]
    #[should_panic(expected = "on the fixed view")]
    fn augmentation_of_an_evaluation_view_is_refused() {
        let _ = FaceBatcher::new(View::TenCrop(44), 0, 4).with_augmentation(Augmentation::STRONG);
    }

    #[test]
    fn loader_covers_the_split_once_per_epoch() {
        let s = split(50);
        let device = Default::default();
        let loader =
            face_loader::<B>(s.clone(), FaceBatcher::new(View::CenterCrop(44), 0, 50), 16, Some(3), 2, &device);
        let mut seen = 0;
        let mut label_sum = 0i64;
        for batch in loader.iter() {
            assert_eq!(batch.images.dims()[1..], [1, 44, 44]);
            seen += batch.targets.dims()[0];
            label_sum += batch.targets.sum().into_scalar();
        }
        assert_eq!(seen, 50);
        let expected: i64 = s.labels().iter().map(|l| l.index() as i64).sum();
        assert_eq!(label_sum, expected);
    }
}
