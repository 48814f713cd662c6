//! Checks against the real FER2013 file named by `FER2013_CSV` (skipped with a notice when unset).

use std::path::PathBuf;

use fer_dataset::{DATA_ENV_VAR, Emotion, Split, load, read_cache, write_cache};

fn real_data() -> Option<PathBuf> {
    match std::env::var_os(DATA_ENV_VAR).filter(|v| !v.is_empty()) {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            eprintln!("skipped: set {DATA_ENV_VAR} to the real fer2013.csv(.gz) to run this test");
            None
        }
    }
}

#[test]
fn published_counts_and_cache_round_trip() {
    let Some(path) = real_data() else { return };
    let data = load(&path).expect("real FER2013 loads");
    let counts = data.counts();

    assert_eq!(counts.split_total(Split::Training), 28_709);
    assert_eq!(counts.split_total(Split::PublicTest), 3_589);
    assert_eq!(counts.split_total(Split::PrivateTest), 3_589);
    let training = [3995, 436, 4097, 7215, 4830, 3171, 4965];
    let public = [467, 56, 496, 895, 653, 415, 607];
    let private = [491, 55, 528, 879, 594, 416, 626];
    for (e, ((&t, &pu), &pr)) in Emotion::ALL.iter().zip(training.iter().zip(&public).zip(&private)) {
        assert_eq!(counts.get(Split::Training, *e), t, "Training {e}");
        assert_eq!(counts.get(Split::PublicTest, *e), pu, "PublicTest {e}");
        assert_eq!(counts.get(Split::PrivateTest, *e), pr, "PrivateTest {e}");
    }

    // The cache holds exactly what the CSV holds.
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("fer2013.cache");
    write_cache(&data, &cache).expect("write cache");
    assert_eq!(read_cache(&cache).expect("read cache"), data);
}

/// FER+'s votes (`fer2013new.csv`): `FERPLUS_CSV`, else the file of that name beside FER2013's.
#[test]
fn ferplus_votes_belong_to_the_real_fer2013() {
    let Some(path) = real_data() else { return };
    let votes = std::env::var_os("FERPLUS_CSV")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| path.with_file_name("fer2013new.csv"));
    if !votes.is_file() {
        eprintln!("skipped: no FER+ votes at {} (set FERPLUS_CSV to fer2013new.csv)", votes.display());
        return;
    }
    let data = load(&path).expect("real FER2013 loads");
    let ferplus = fer_dataset::read_ferplus(&votes).expect("FER+ votes load");
    ferplus.check_matches(&data, &votes).expect("one row per face, split by split");
    let without = |split| ferplus.split(split).iter().filter(|v| v.distribution().is_none()).count();
    // FER+ gave 178 faces no vote for any of the seven classes; 176 got all ten "not a face"
    // (173 of them, the rows without an image name, carry FER2013's approximate pixels).
    let no_votes = Split::ALL.map(without);
    assert_eq!(no_votes, [152, 10, 16]);
    let not_faces = Split::ALL.iter().flat_map(|&s| ferplus.split(s)).filter(|v| v.counts[9] == 10).count();
    assert_eq!(not_faces, 176);
    // Each face has ten votes, except one with nine.
    let nine = Split::ALL
        .iter()
        .flat_map(|&s| ferplus.split(s))
        .filter(|v| v.counts.iter().map(|&c| u32::from(c)).sum::<u32>() == 9)
        .count();
    assert_eq!(nine, 1);
}
