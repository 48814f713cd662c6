//! Streaming reader for the original `fer2013.csv` (plain or gzip'd).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use crate::{DatasetError, Emotion, FACE_PIXELS, FaceImage, Fer2013, Split};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const HEADER: [&str; 3] = ["emotion", "pixels", "Usage"];

/// Reads `fer2013.csv` or `fer2013.csv.gz` (gzip is recognised by its magic bytes, not the name).
///
/// The file is streamed: memory holds the decoded faces (~83 MB for FER2013), never the text.
pub fn read_csv(path: impl AsRef<Path>) -> Result<Fer2013, DatasetError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|source| DatasetError::Open { path: path.to_path_buf(), source })?;
    read_csv_from(file, path)
}

/// Reads FER2013 CSV text (plain or gzip'd) from any reader; `path` is only used in errors.
pub fn read_csv_from(reader: impl Read, path: impl AsRef<Path>) -> Result<Fer2013, DatasetError> {
    let path = path.as_ref().to_path_buf();
    let mut buffered = BufReader::with_capacity(1 << 20, reader);
    let head = buffered.fill_buf().map_err(|source| DatasetError::Read { path: path.clone(), line: 1, source })?;
    let is_gzip = head.starts_with(&GZIP_MAGIC);
    let text: Box<dyn Read> = if is_gzip {
        Box::new(BufReader::with_capacity(1 << 20, MultiGzDecoder::new(buffered)))
    } else {
        Box::new(buffered)
    };
    parse_rows(text, path)
}

fn parse_rows(text: impl Read, path: PathBuf) -> Result<Fer2013, DatasetError> {
    let mut rows = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(text);
    let mut record = csv::ByteRecord::new();
    let mut line = 1u64;

    if !rows.read_byte_record(&mut record).map_err(|e| read_error(e, 1, &path))? {
        return Err(DatasetError::Empty { path });
    }
    check_header(&record, &path)?;

    let mut data = Fer2013::default();
    loop {
        match rows.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(read_error(e, line + 1, &path)),
        }
        line = record.position().map_or(line + 1, |p| p.line());
        if record.len() == 1 && record[0].is_empty() {
            continue; // a blank line
        }
        let (split, label, image) = parse_row(&record, &path, line)?;
        data.split_mut(split).push(label, image);
    }
    if data.is_empty() {
        return Err(DatasetError::NoRows { path });
    }
    Ok(data)
}

fn check_header(record: &csv::ByteRecord, path: &Path) -> Result<(), DatasetError> {
    let fields: Vec<String> = record.iter().map(|f| String::from_utf8_lossy(f).trim().to_string()).collect();
    let first = fields.first().map(|f| f.trim_start_matches('\u{feff}'));
    let ok = fields.len() == 3 && first == Some(HEADER[0]) && fields[1] == HEADER[1] && fields[2] == HEADER[2];
    if ok { Ok(()) } else { Err(DatasetError::Header { path: path.to_path_buf(), found: shorten(&fields.join(",")) }) }
}

fn parse_row(record: &csv::ByteRecord, path: &Path, line: u64) -> Result<(Split, Emotion, FaceImage), DatasetError> {
    if record.len() != 3 {
        return Err(DatasetError::FieldCount { path: path.to_path_buf(), line, found: record.len() });
    }
    let field_error = |field: &'static str, value: &[u8], problem: String| DatasetError::Field {
        path: path.to_path_buf(),
        line,
        field,
        value: shorten(&String::from_utf8_lossy(value)),
        problem,
    };

    let emotion_text = record[0].trim_ascii();
    let label = std::str::from_utf8(emotion_text)
        .ok()
        .and_then(|t| t.parse::<usize>().ok())
        .and_then(Emotion::from_index)
        .ok_or_else(|| field_error("emotion", emotion_text, "expected a label 0-6".into()))?;

    let usage_text = record[2].trim_ascii();
    let split = std::str::from_utf8(usage_text)
        .ok()
        .and_then(Split::from_usage)
        .ok_or_else(|| field_error("Usage", usage_text, "expected Training, PublicTest or PrivateTest".into()))?;

    let mut pixels = [0u8; FACE_PIXELS];
    let mut count = 0usize;
    for token in record[1].split(|b| b.is_ascii_whitespace()).filter(|t| !t.is_empty()) {
        let value = parse_pixel(token).ok_or_else(|| {
            let problem = format!("pixel {} is not an integer in 0-255", count + 1);
            field_error("pixels", token, problem)
        })?;
        if count < FACE_PIXELS {
            pixels[count] = value;
        }
        count += 1;
    }
    if count != FACE_PIXELS {
        let problem = format!("expected {FACE_PIXELS} space-separated values (48x48), found {count}");
        return Err(field_error("pixels", &record[1], problem));
    }
    Ok((split, label, FaceImage(pixels)))
}

/// Parses a decimal 0–255 without allocating; `None` for anything else.
fn parse_pixel(token: &[u8]) -> Option<u8> {
    if token.is_empty() || token.len() > 3 {
        return None;
    }
    let mut value = 0u16;
    for &b in token {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u16::from(b - b'0');
    }
    u8::try_from(value).ok()
}

/// A CSV reader's failure at `line` of `path` as a [`DatasetError::Read`].
pub(crate) fn read_error(e: csv::Error, line: u64, path: &Path) -> DatasetError {
    let source = match e.into_kind() {
        csv::ErrorKind::Io(io) => io,
        other => std::io::Error::other(format!("{other:?}")),
    };
    DatasetError::Read { path: path.to_path_buf(), line, source }
}

/// Keeps error messages readable when a field is a 9 KB pixel string.
fn shorten(text: &str) -> String {
    const MAX: usize = 60;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        let head: String = text.chars().take(MAX).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    /// A synthetic FER2013 CSV: `rows` faces cycling through labels and splits.
    fn synthetic_csv(rows: usize) -> String {
        let mut text = String::from("emotion,pixels,Usage\n");
        for r in 0..rows {
            let split = Split::ALL[r % 3];
            let pixels: Vec<String> = (0..FACE_PIXELS).map(|i| ((i + r) % 256).to_string()).collect();
            text.push_str(&format!("{},{},{}\n", r % 7, pixels.join(" "), split.usage()));
        }
        text
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(bytes).expect("in-memory write");
        enc.finish().expect("in-memory gzip")
    }

    fn parse(text: &str) -> Result<Fer2013, DatasetError> {
        read_csv_from(text.as_bytes(), "test.csv")
    }

    /// Replaces line `line` (1-based) of a 300-row synthetic file.
    fn with_line(line: usize, replacement: &str) -> String {
        let text = synthetic_csv(300);
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        lines[line - 1] = replacement.to_string();
        lines.join("\n") + "\n"
    }

    fn row(emotion: &str, pixels: &str, usage: &str) -> String {
        format!("{emotion},{pixels},{usage}")
    }

    fn good_pixels() -> String {
        vec!["7"; FACE_PIXELS].join(" ")
    }

    #[test]
    fn reads_plain_and_gzip_identically() {
        let text = synthetic_csv(300);
        let plain = parse(&text).expect("valid synthetic csv");
        let gz = read_csv_from(&gzip(text.as_bytes())[..], "test.csv.gz").expect("valid gzip");
        assert_eq!(plain, gz);
        assert_eq!(plain.len(), 300);
        for s in Split::ALL {
            assert_eq!(plain.split(s).len(), 100);
        }
        let train = plain.split(Split::Training);
        // Row 3 is the second training row: label 3 % 7, pixel i = (i + 3) % 256.
        assert_eq!(train.label(1), Emotion::Happy);
        assert_eq!(train.image(1).get(0, 0), 3);
        assert_eq!(train.image(1).get(1, 1), 48 + 1 + 3);
        assert_eq!(plain.counts().total(), 300);
    }

    #[test]
    fn accepts_crlf_and_bom() {
        let text = format!("\u{feff}{}", synthetic_csv(9).replace('\n', "\r\n"));
        assert_eq!(parse(&text).expect("crlf + bom").len(), 9);
    }

    fn expect_field_error(text: &str, want_line: u64, want_field: &str, want_value: &str) -> String {
        match parse(text) {
            Err(e @ DatasetError::Field { .. }) => {
                let DatasetError::Field { line, field, ref value, .. } = e else { unreachable!() };
                assert_eq!((line, field, value.as_str()), (want_line, want_field, want_value), "{e}");
                let msg = e.to_string();
                assert!(msg.contains("test.csv:"), "message names the file: {msg}");
                msg
            }
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn rejects_label_out_of_range() {
        let msg = expect_field_error(&with_line(5, &row("7", &good_pixels(), "Training")), 5, "emotion", "7");
        assert!(msg.contains("test.csv:5"), "{msg}");
        expect_field_error(&with_line(2, &row("-1", &good_pixels(), "Training")), 2, "emotion", "-1");
        expect_field_error(&with_line(3, &row("happy", &good_pixels(), "Training")), 3, "emotion", "happy");
    }

    #[test]
    fn rejects_unknown_usage() {
        expect_field_error(&with_line(10, &row("1", &good_pixels(), "Validation")), 10, "Usage", "Validation");
    }

    #[test]
    fn rejects_pixel_over_255_and_non_numeric() {
        let mut px = vec!["7"; FACE_PIXELS];
        px[100] = "256";
        let msg = expect_field_error(&with_line(4, &row("0", &px.join(" "), "PublicTest")), 4, "pixels", "256");
        assert!(msg.contains("pixel 101"), "{msg}");
        px[100] = "12a";
        expect_field_error(&with_line(4, &row("0", &px.join(" "), "PublicTest")), 4, "pixels", "12a");
        px[100] = "-3";
        expect_field_error(&with_line(4, &row("0", &px.join(" "), "PublicTest")), 4, "pixels", "-3");
    }

    #[test]
    fn rejects_wrong_pixel_count() {
        let short = vec!["7"; FACE_PIXELS - 1].join(" ");
        let text = with_line(7, &row("2", &short, "PrivateTest"));
        match parse(&text) {
            Err(DatasetError::Field { line: 7, field: "pixels", problem, .. }) => {
                assert!(problem.contains("found 2303"), "{problem}")
            }
            other => panic!("expected a pixel-count error, got {other:?}"),
        }
        let long = vec!["7"; FACE_PIXELS + 1].join(" ");
        assert!(matches!(
            parse(&with_line(7, &row("2", &long, "PrivateTest"))),
            Err(DatasetError::Field { line: 7, .. })
        ));
    }

    #[test]
    fn rejects_wrong_field_count() {
        let text = with_line(6, &format!("2,{}", good_pixels()));
        assert!(matches!(parse(&text), Err(DatasetError::FieldCount { line: 6, found: 2, .. })));
    }

    #[test]
    fn rejects_wrong_header() {
        let text = synthetic_csv(3).replacen("emotion,pixels,Usage", "label,pixels,split", 1);
        let err = parse(&text).expect_err("bad header");
        assert!(matches!(err, DatasetError::Header { ref found, .. } if found == "label,pixels,split"), "{err}");
        assert!(err.to_string().starts_with("test.csv:1:"), "{err}");
    }

    #[test]
    fn rejects_empty_and_header_only() {
        assert!(matches!(parse(""), Err(DatasetError::Empty { .. })));
        assert!(matches!(read_csv_from(&gzip(b"")[..], "e.gz"), Err(DatasetError::Empty { .. })));
        assert!(matches!(parse("emotion,pixels,Usage\n"), Err(DatasetError::NoRows { .. })));
    }

    #[test]
    fn rejects_truncated_gzip() {
        let gz = gzip(synthetic_csv(300).as_bytes());
        let cut = &gz[..gz.len() / 2];
        match read_csv_from(cut, "cut.csv.gz") {
            Err(e @ DatasetError::Read { .. }) => {
                let msg = e.to_string();
                assert!(msg.starts_with("cut.csv.gz:"), "{msg}");
                let DatasetError::Read { line, .. } = e else { unreachable!() };
                assert!(line > 1 && line <= 301, "line {line}");
            }
            other => panic!("expected a read error, got {other:?}"),
        }
    }

    #[test]
    fn rejects_missing_file() {
        let err = read_csv("/definitely/not/here/fer2013.csv").expect_err("missing");
        assert!(matches!(err, DatasetError::Open { .. }));
        assert!(err.to_string().contains("/definitely/not/here/fer2013.csv"), "{err}");
    }

    #[test]
    fn parse_pixel_bounds() {
        assert_eq!(parse_pixel(b"0"), Some(0));
        assert_eq!(parse_pixel(b"255"), Some(255));
        assert_eq!(parse_pixel(b"007"), Some(7));
        assert_eq!(parse_pixel(b"256"), None);
        assert_eq!(parse_pixel(b"1000"), None);
        assert_eq!(parse_pixel(b""), None);
        assert_eq!(parse_pixel(b"+1"), None);
    }
}
