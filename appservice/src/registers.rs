//! Professional registers (BIG, RPPS, GMC...) imported from exported CSV or TSV files.
//!
//! Each register is read with the column mapping of its config and kept in memory, keyed by the
//! normalised registration number. A file that cannot be read keeps the entries of its last
//! good version, so a half-copied export never revokes anyone. Such a register is marked as not
//! `healthy`, and re-verification skips it until a good version is read.

use std::collections::BTreeMap;

use caduceus_config::appservice::RegisterConfig;
use serde::{Deserialize, Serialize};

use crate::matching::RegisterName;
use crate::source::{cell, Source, SourceError, Table};

/// A place where someone works, in the format of the homeserver's directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Area {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// One registration in a register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterEntry {
    /// The normalised number (see [`normalise_number`]).
    pub number: String,
    pub name: RegisterName,
    pub professions: Vec<String>,
    pub specialties: Vec<String>,
    pub organisations: Vec<String>,
    pub areas: Vec<Area>,
    /// Struck off, suspended, or otherwise not allowed to practise.
    pub struck_off: bool,
    /// The status as the file gives it, for messages and evidence.
    pub status: String,
}

/// One register and the entries of its last good file.
#[derive(Debug)]
pub struct Register {
    config: RegisterConfig,
    source: Source,
    entries: BTreeMap<String, RegisterEntry>,
    healthy: bool,
}

/// Removes spaces and separators and uppercases, so "19 012 345 601" and "19012345601" are the
/// same number.
pub fn normalise_number(number: &str) -> String {
    number
        .chars()
        .filter(|c| !(c.is_whitespace() || matches!(c, '.' | '-' | '/' | '_')))
        .flat_map(char::to_uppercase)
        .collect()
}

impl Register {
    pub fn new(config: RegisterConfig) -> Self {
        let source = Source::new(config.path.clone(), config.format);
        Self { config, source, entries: BTreeMap::new(), healthy: false }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Checks whether the last read of the file succeeded.
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Reads the file again if it changed. Returns whether new entries were loaded.
    pub fn refresh(&mut self) -> bool {
        match self.source.read_if_changed().and_then(|table| match table {
            Some(table) => self.import(&table).map(Some),
            None => Ok(None),
        }) {
            Ok(Some(entries)) => {
                let struck_off = entries.values().filter(|entry| entry.struck_off).count();
                tracing::info!(
                    register = %self.config.name,
                    path = %self.source.path().display(),
                    entries = entries.len(),
                    struck_off,
                    "imported register"
                );
                self.entries = entries;
                self.healthy = true;
                true
            }
            Ok(None) => false,
            Err(error) => {
                if self.healthy || self.entries.is_empty() {
                    tracing::error!(register = %self.config.name, %error, "cannot import register; keeping the last good version");
                }
                self.healthy = false;
                false
            }
        }
    }

    /// Looks up a registration number, in any spacing.
    pub fn lookup(&self, number: &str) -> Option<&RegisterEntry> {
        self.entries.get(&normalise_number(number))
    }

    /// Turns the rows of the file into entries. Several rows with one number (such as one row
    /// per specialty) are merged; if any of them is struck off, the entry is.
    fn import(&self, table: &Table) -> Result<BTreeMap<String, RegisterEntry>, SourceError> {
        let columns = &self.config.columns;
        let number = table.column(&columns.number)?;
        let name = table.column(&columns.name)?;
        let given = table.column(&columns.given_names)?;
        let prefix = table.column(&columns.name_prefix)?;
        let surname = table.column(&columns.surname)?;
        let professions = table.column(&columns.professions)?;
        let specialties = table.column(&columns.specialties)?;
        let organisations = table.column(&columns.organisations)?;
        let city = table.column(&columns.city)?;
        let postal_code = table.column(&columns.postal_code)?;
        let region = table.column(&columns.region)?;
        let country = table.column(&columns.country)?;
        let status = table.column(&columns.status)?;

        let mut entries: BTreeMap<String, RegisterEntry> = BTreeMap::new();
        for row in &table.rows {
            let key = normalise_number(cell(row, number));
            if key.is_empty() {
                continue;
            }
            let register_name = if surname.is_some() {
                let surname = [cell(row, prefix), cell(row, surname)]
                    .iter()
                    .filter(|part| !part.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" ");
                RegisterName { given_names: cell(row, given).to_owned(), surname }
            } else {
                RegisterName::from_full_name(cell(row, name))
            };
            let row_status = cell(row, status).to_owned();
            let area = Area {
                city: non_empty(cell(row, city)),
                postal_code: non_empty(cell(row, postal_code)),
                region: non_empty(cell(row, region)),
                country: non_empty(cell(row, country)).or_else(|| non_empty(&self.config.country)),
            };
            let list = |column| self.split_list(cell(row, column));
            let entry = entries.entry(key.clone()).or_insert_with(|| RegisterEntry {
                number: key,
                name: register_name,
                professions: Vec::new(),
                specialties: Vec::new(),
                organisations: Vec::new(),
                areas: Vec::new(),
                struck_off: false,
                status: row_status.clone(),
            });
            merge(&mut entry.professions, list(professions));
            merge(&mut entry.specialties, list(specialties));
            merge(&mut entry.organisations, list(organisations));
            if area != Area::default() && !entry.areas.contains(&area) {
                entry.areas.push(area);
            }
            if status.is_some() && self.is_struck_off(&row_status) {
                entry.struck_off = true;
                entry.status = row_status;
            }
        }
        Ok(entries)
    }

    fn is_struck_off(&self, status: &str) -> bool {
        let listed =
            |values: &[String]| values.iter().any(|value| value.eq_ignore_ascii_case(status));
        listed(&self.config.struck_off_values)
            || (!self.config.active_values.is_empty() && !listed(&self.config.active_values))
    }

    fn split_list(&self, value: &str) -> Vec<String> {
        value
            .split(self.config.list_separator.as_str())
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

fn merge(into: &mut Vec<String>, values: Vec<String>) {
    for value in values {
        if !into.contains(&value) {
            into.push(value);
        }
    }
}

/// All configured registers.
#[derive(Debug, Default)]
pub struct Registers {
    registers: Vec<Register>,
}

impl Registers {
    pub fn new(configs: &[RegisterConfig]) -> Self {
        Self { registers: configs.iter().cloned().map(Register::new).collect() }
    }

    /// Reads every file that changed.
    pub fn refresh(&mut self) {
        for register in &mut self.registers {
            register.refresh();
        }
    }

    /// Finds a register by the name people type, without case.
    pub fn get(&self, name: &str) -> Option<&Register> {
        self.registers.iter().find(|register| register.name().eq_ignore_ascii_case(name))
    }

    /// Returns the register names, as configured.
    pub fn names(&self) -> Vec<&str> {
        self.registers.iter().map(Register::name).collect()
    }

    /// Looks a number up in every register; used when someone sends a number without saying
    /// which register it is from.
    pub fn lookup_anywhere(&self, number: &str) -> Vec<(&Register, &RegisterEntry)> {
        self.registers
            .iter()
            .filter_map(|register| register.lookup(number).map(|entry| (register, entry)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use caduceus_config::appservice::{AppserviceConfig, FileFormat, RegisterColumns};

    use super::*;

    fn examples() -> AppserviceConfig {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gatekeeper.toml");
        AppserviceConfig::load_with_env(Some(&file), Vec::new()).unwrap()
    }

    fn example_registers() -> Registers {
        let mut registers = Registers::new(&examples().registers);
        registers.refresh();
        registers
    }

    #[test]
    fn example_big_register_maps_its_columns() {
        let registers = example_registers();
        let big = registers.get("big").unwrap();
        assert!(big.healthy());
        let entry = big.lookup("190 123 456 01").unwrap();
        assert_eq!(entry.number, "19012345601");
        assert_eq!(
            entry.name,
            RegisterName { given_names: "J.H.".into(), surname: "de Vries".into() }
        );
        assert_eq!(entry.professions, ["Arts"]);
        // Two rows, one per specialty, are one entry.
        assert_eq!(entry.specialties, ["Cardiologie", "Interne geneeskunde"]);
        assert_eq!(entry.areas[0].city.as_deref(), Some("Utrecht"));
        assert_eq!(entry.areas[0].country.as_deref(), Some("NL"));
        assert!(!entry.struck_off);
        assert!(big.lookup("19099999901").unwrap().struck_off);
    }

    #[test]
    fn example_rpps_and_gmc_registers_map_their_columns() {
        let registers = example_registers();
        let rpps = registers.get("RPPS").unwrap();
        let entry = rpps.lookup("10001234567").unwrap();
        assert_eq!(entry.name.surname, "LEFÈVRE");
        assert_eq!(entry.specialties, ["Cardiologie et maladies vasculaires"]);
        assert_eq!(entry.areas[0].postal_code.as_deref(), Some("69003"));
        assert!(rpps.lookup("10009999999").unwrap().struck_off);

        let gmc = registers.get("GMC").unwrap();
        let entry = gmc.lookup("1234567").unwrap();
        assert_eq!(entry.name.given_names, "Sarah Jane");
        assert_eq!(entry.areas[0].country.as_deref(), Some("GB"));
        // GMC lists who may practise; any status but "Registered with Licence" is not active.
        assert!(gmc.lookup("7654321").unwrap().struck_off);
        assert_eq!(registers.names(), ["BIG", "RPPS", "GMC"]);
        assert_eq!(registers.lookup_anywhere("1234567").len(), 1);
    }

    #[test]
    fn full_name_column_and_broken_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reg.tsv");
        std::fs::write(&path, "nr\tnaam\tstatus\n12-34\tde Vries, Jan\tactief\n").unwrap();
        let config = RegisterConfig {
            name: "TEST".into(),
            path: path.clone(),
            format: FileFormat::Tsv,
            struck_off_values: vec!["Doorgehaald".into()],
            columns: RegisterColumns {
                number: "nr".into(),
                name: "naam".into(),
                status: "status".into(),
                ..RegisterColumns::default()
            },
            ..RegisterConfig::default()
        };
        let mut register = Register::new(config);
        assert!(register.refresh());
        assert_eq!(register.lookup("1234").unwrap().name.surname, "de Vries");
        assert!(!register.refresh(), "an unchanged file is not read again");

        std::fs::write(&path, "nr\tnaam\tstatus\n1234\tde Vries, Jan\tDOORGEHAALD\n").unwrap();
        assert!(register.refresh());
        assert!(register.lookup("1234").unwrap().struck_off);

        // A file without the configured columns keeps the last good entries.
        std::fs::write(&path, "something else\n1\n").unwrap();
        assert!(!register.refresh());
        assert!(!register.healthy());
        assert_eq!(register.len(), 1);
    }

    #[test]
    fn numbers_are_normalised() {
        assert_eq!(normalise_number(" 190.123-456 01 "), "19012345601");
        assert_eq!(normalise_number("ab/12"), "AB12");
    }
}
