//! The faces a command scores and what a classifier sees of them (`fer attack`, `fer ceiling`).

use std::path::PathBuf;

use anyhow::Result;
use fer_dataset::{Split, SplitData, View};

/// `--split`, `--limit`, the view (`--tencrop`, `--center-crop`, `--crop`) and `--data`.
#[derive(clap::Args)]
pub struct FacesArgs {
    /// Let the classifier see the TenCrop (logits averaged); an attack perturbs the full face.
    #[arg(long)]
    pub tencrop: bool,
    /// Let the classifier see the centred crop (the view its training crops are centred on); an
    /// attack perturbs the full face through it, and the pixels outside it do not count.
    #[arg(long, conflicts_with = "tencrop")]
    pub center_crop: bool,
    /// Side of the TenCrop or centre crop.
    #[arg(long, default_value_t = 44)]
    pub crop: usize,
    /// Split: public, private or training.
    #[arg(long, default_value = "private")]
    pub split: Split,
    /// Only the first this-many faces of the split.
    #[arg(long)]
    pub limit: Option<usize>,
    /// FER2013 CSV, .csv.gz or cache [default: $FER2013_CSV, else data/fer2013.csv(.gz)]
    #[arg(long)]
    pub data: Option<PathBuf>,
}

impl FacesArgs {
    /// What the classifier sees: the whole face, the centred crop or the TenCrop.
    pub fn view(&self) -> View {
        match (self.tencrop, self.center_crop) {
            (true, _) => View::TenCrop(self.crop),
            (false, true) => View::CenterCrop(self.crop),
            (false, false) => View::Full,
        }
    }

    /// The split's faces, cut to `--limit`; an empty split is an error.
    pub fn load(&self) -> Result<SplitData> {
        let data = crate::load_with_progress(self.data.as_deref())?;
        let mut faces = data.split(self.split).clone();
        if let Some(limit) = self.limit.filter(|&l| l < faces.len()) {
            faces = faces.select(&(0..limit).collect::<Vec<_>>());
        }
        anyhow::ensure!(!faces.is_empty(), "the {} split has no faces", self.split);
        Ok(faces)
    }
}
