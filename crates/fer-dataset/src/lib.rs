//! # fer-dataset
//!
//! Everything between the FER2013 file on disk and a batch of Burn tensors:
//!
//! * **In**: the original `fer2013.csv` (or `.csv.gz`) with header `emotion,pixels,Usage`, or the
//!   binary cache written by [`write_cache`] (`fer preprocess`).
//! * **Out**: a [`Fer2013`] value holding labels and 48×48 gray faces per [`Split`], per-class
//!   [`ClassCounts`], crops ([`View`]: RandomCrop+flip, CenterCrop, TenCrop; [`Augmentation`]:
//!   rotation, zoom and random erasing on top of the random crops), the faces that are copies of
//!   faces of another split ([`copies_in`], [`CopyCounts`], [`CopyPartition`]: 8 % of each test split has an exact
//!   copy in Training) and a Burn
//!   [`Batcher`](burn::data::dataloader::batcher::Batcher) ([`FaceBatcher`]) producing
//!   `[N, 1, S, S]` images scaled to `[0, 1]` and `Int` labels.
//! * **Beside it**: FER+'s ten crowd votes per face (`fer2013new.csv`, [`read_ferplus`]): a
//!   distribution over the seven classes to train on as soft targets, and a second opinion on
//!   FER2013's labels ([`FerPlusVotes`]).
//!
//! It does not know about models, features or training; those crates depend on it, never the
//! reverse. Bad input never panics: every reader returns a [`DatasetError`] naming the file, the
//! 1-based line (the header is line 1), the field and the value at fault.
//!
//! ```no_run
//! use fer_dataset::{load, Split};
//!
//! let data = load("fer2013.csv.gz")?; // CSV, gzip'd CSV or `fer preprocess` cache
//! let train = data.split(Split::Training);
//! println!("{} training faces, first is {}", train.len(), train.label(0));
//! println!("{}", data.counts());
//!
//! // FER+'s ten crowd votes per face, beside FER2013's labels.
//! let votes = fer_dataset::read_ferplus("fer2013new.csv")?;
//! votes.check_matches(&data, "fer2013new.csv".as_ref())?;
//! let first = votes.split(Split::Training)[0];
//! println!("FER+ majority {:?}, vote shares {:?}", first.majority(), first.distribution());
//! # Ok::<(), fer_dataset::DatasetError>(())
//! ```
#![deny(missing_docs)]

mod augment;
mod batch;
mod cache;
mod copies;
mod csv_reader;
mod data;
mod emotion;
mod error;
mod ferplus;
mod path;
mod stream;
pub mod synthetic;
mod view;

pub use augment::{Augmentation, ERASE_AREA, ERASE_RATIO};
pub use batch::{FaceBatch, FaceBatcher, FaceDataset, FaceItem, face_loader};
pub use cache::{CACHE_MAGIC, CACHE_VERSION, read_cache, write_atomically, write_cache};
pub use copies::{CopyCounts, CopyPartition, copies_in};
pub use csv_reader::{read_csv, read_csv_from};
pub use data::{ClassCounts, FACE_PIXELS, FACE_SIDE, FaceImage, Fer2013, SplitData};
pub use emotion::{Emotion, Split};
pub use error::DatasetError;
pub use ferplus::{FERPLUS_CATEGORIES, FerPlus, FerPlusVotes, read_ferplus, read_ferplus_from};
pub use path::{DATA_ENV_VAR, default_data_path, is_cache_file, load};
pub use stream::BatchStream;
pub use view::{CropWindow, View};
