//! Exported files (registers and rosters) and the detection of their changes.
//!
//! A file is read again when its size or modification time changes. Publishers replace such
//! exports whole, usually by writing a new file and renaming it over the old one, which changes
//! both; comparing the two is cheap enough to do before every lookup.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use caduceus_config::appservice::FileFormat;

/// A file that could not be read or does not have the configured columns.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is not valid {format}: {source}")]
    Parse { path: String, format: &'static str, source: csv::Error },
    #[error("{path} has no column named {column:?} (its columns are: {found})")]
    MissingColumn { path: String, column: String, found: String },
}

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

/// An exported file and the version of it that was last read.
#[derive(Debug)]
pub struct Source {
    path: PathBuf,
    format: FileFormat,
    stamp: Option<Stamp>,
}

/// The rows of an exported file, with the header row apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub path: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Source {
    pub fn new(path: PathBuf, format: FileFormat) -> Self {
        Self { path, format, stamp: None }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file if it changed since the last successful read, and returns `None` when it
    /// did not. A failed read is tried again next time.
    pub fn read_if_changed(&mut self) -> Result<Option<Table>, SourceError> {
        let stamp = self.current_stamp()?;
        if self.stamp == Some(stamp) {
            return Ok(None);
        }
        let table = self.read()?;
        // The stamp is taken before reading, so a change during the read is seen next time.
        self.stamp = Some(stamp);
        Ok(Some(table))
    }

    fn current_stamp(&self) -> Result<Stamp, SourceError> {
        let metadata = fs::metadata(&self.path).map_err(|source| self.io_error(source))?;
        Ok(Stamp { len: metadata.len(), modified: metadata.modified().ok() })
    }

    fn io_error(&self, source: std::io::Error) -> SourceError {
        SourceError::Io { path: self.path.display().to_string(), source }
    }

    fn read(&self) -> Result<Table, SourceError> {
        let bytes = fs::read(&self.path).map_err(|source| self.io_error(source))?;
        parse(&self.path.display().to_string(), self.format, &bytes)
    }
}

/// Parses CSV or TSV text with a header row. Cells are trimmed; rows may be shorter or longer
/// than the header.
pub fn parse(path: &str, format: FileFormat, bytes: &[u8]) -> Result<Table, SourceError> {
    let (delimiter, format_name) = match format {
        FileFormat::Csv => (b',', "CSV"),
        FileFormat::Tsv => (b'\t', "TSV"),
    };
    // Spreadsheet programs often start UTF-8 exports with a byte order mark.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let parse_error =
        |source| SourceError::Parse { path: path.to_owned(), format: format_name, source };
    let headers = reader.headers().map_err(parse_error)?.iter().map(str::to_owned).collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(parse_error)?;
        if record.iter().all(str::is_empty) {
            continue;
        }
        rows.push(record.iter().map(str::to_owned).collect());
    }
    Ok(Table { path: path.to_owned(), headers, rows })
}

impl Table {
    /// Returns the index of the column with header `name` (compared without case), `None` when
    /// `name` is empty (the column is not configured), and an error when it is missing.
    pub fn column(&self, name: &str) -> Result<Option<usize>, SourceError> {
        if name.is_empty() {
            return Ok(None);
        }
        match self.headers.iter().position(|header| header.eq_ignore_ascii_case(name)) {
            Some(index) => Ok(Some(index)),
            None => Err(SourceError::MissingColumn {
                path: self.path.clone(),
                column: name.to_owned(),
                found: self.headers.join(", "),
            }),
        }
    }
}

/// Returns the cell of `row` in `column`, or "" when the column is not configured or the row
/// is short.
pub fn cell(row: &[String], column: Option<usize>) -> &str {
    column.and_then(|index| row.get(index)).map_or("", String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_tsv_with_quotes_bom_and_blank_lines() {
        let csv = "\u{feff}number,name\n\"123\",\"de Vries, Jan\"\n\n456,Piet\n";
        let table = parse("a.csv", FileFormat::Csv, csv.as_bytes()).unwrap();
        assert_eq!(table.headers, ["number", "name"]);
        assert_eq!(table.rows, [vec!["123", "de Vries, Jan"], vec!["456", "Piet"]]);
        assert_eq!(table.column("NAME").unwrap(), Some(1));
        assert_eq!(table.column("").unwrap(), None);
        let error = table.column("status").unwrap_err().to_string();
        assert!(error.contains("status") && error.contains("number, name"), "{error}");

        let tsv = "number\tname\n1\tA, B\n2\n";
        let table = parse("a.tsv", FileFormat::Tsv, tsv.as_bytes()).unwrap();
        assert_eq!(table.rows[0], ["1", "A, B"]);
        assert_eq!(cell(&table.rows[1], Some(1)), "");
    }

    #[test]
    fn changes_are_detected_by_size_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("register.csv");
        fs::write(&path, "number\n1\n").unwrap();
        let mut source = Source::new(path.clone(), FileFormat::Csv);

        assert_eq!(source.read_if_changed().unwrap().unwrap().rows.len(), 1);
        assert!(source.read_if_changed().unwrap().is_none(), "an unchanged file is not read");

        fs::write(&path, "number\n1\n2\n").unwrap();
        assert_eq!(source.read_if_changed().unwrap().unwrap().rows.len(), 2);

        // Same size, later modification time.
        let modified = fs::metadata(&path).unwrap().modified().unwrap();
        fs::write(&path, "number\n3\n4\n").unwrap();
        let file = fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(modified + std::time::Duration::from_secs(2)).unwrap();
        assert_eq!(source.read_if_changed().unwrap().unwrap().rows[0], ["3"]);

        fs::remove_file(&path).unwrap();
        let error = source.read_if_changed().unwrap_err().to_string();
        assert!(error.contains("register.csv"), "{error}");
    }
}
