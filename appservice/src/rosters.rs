//! Staff lists exported by HR. Everyone on one is granted the `identity` level, matched by a
//! validated email address or by Matrix ID.

use caduceus_config::appservice::RosterConfig;

use crate::source::{cell, Source, SourceError, Table};

/// One person on a roster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterEntry {
    /// Lowercased.
    pub email: String,
    pub matrix_id: String,
    pub organisation: String,
    pub profession: String,
}

/// One roster and the entries of its last good file.
#[derive(Debug)]
pub struct Roster {
    config: RosterConfig,
    source: Source,
    entries: Vec<RosterEntry>,
}

impl Roster {
    pub fn new(config: RosterConfig) -> Self {
        let source = Source::new(config.path.clone(), config.format);
        Self { config, source, entries: Vec::new() }
    }

    /// Reads the file again if it changed. Returns whether new entries were loaded; a file
    /// that cannot be read keeps the last good entries.
    pub fn refresh(&mut self) -> bool {
        match self.source.read_if_changed().and_then(|table| match table {
            Some(table) => self.import(&table).map(Some),
            None => Ok(None),
        }) {
            Ok(Some(entries)) => {
                tracing::info!(path = %self.source.path().display(), entries = entries.len(), "imported roster");
                self.entries = entries;
                true
            }
            Ok(None) => false,
            Err(error) => {
                tracing::error!(%error, "cannot import roster; keeping the last good version");
                false
            }
        }
    }

    fn import(&self, table: &Table) -> Result<Vec<RosterEntry>, SourceError> {
        let columns = &self.config.columns;
        let email = table.column(&columns.email)?;
        let matrix_id = table.column(&columns.matrix_id)?;
        let organisation = table.column(&columns.organisation)?;
        let profession = table.column(&columns.profession)?;
        Ok(table
            .rows
            .iter()
            .map(|row| RosterEntry {
                email: cell(row, email).to_lowercase(),
                matrix_id: cell(row, matrix_id).to_owned(),
                organisation: match cell(row, organisation) {
                    "" => self.config.organisation.clone(),
                    value => value.to_owned(),
                },
                profession: cell(row, profession).to_owned(),
            })
            .filter(|entry| !entry.email.is_empty() || !entry.matrix_id.is_empty())
            .collect())
    }

    fn find(&self, user_id: &str, emails: &[String]) -> Option<&RosterEntry> {
        self.entries.iter().find(|entry| {
            (!entry.matrix_id.is_empty() && entry.matrix_id == user_id)
                || (!entry.email.is_empty()
                    && emails.iter().any(|email| email.eq_ignore_ascii_case(&entry.email)))
        })
    }
}

/// All configured rosters.
#[derive(Debug, Default)]
pub struct Rosters {
    rosters: Vec<Roster>,
}

impl Rosters {
    pub fn new(configs: &[RosterConfig]) -> Self {
        Self { rosters: configs.iter().cloned().map(Roster::new).collect() }
    }

    /// Reads every file that changed; returns whether any did.
    pub fn refresh(&mut self) -> bool {
        let mut changed = false;
        for roster in &mut self.rosters {
            changed |= roster.refresh();
        }
        changed
    }

    /// Finds the roster entry of a user by Matrix ID or by one of their validated emails.
    pub fn find(&self, user_id: &str, emails: &[String]) -> Option<&RosterEntry> {
        self.rosters.iter().find_map(|roster| roster.find(user_id, emails))
    }
}

/// Whether `email` is at one of the trusted domains or a subdomain of one. Returns the domain.
pub fn trusted_domain<'a>(email: &str, domains: &'a [String]) -> Option<&'a str> {
    let (_, host) = email.rsplit_once('@')?;
    let host = host.to_ascii_lowercase();
    domains.iter().map(String::as_str).find(|domain| {
        let domain = domain.trim_start_matches('@').to_ascii_lowercase();
        host == domain || host.ends_with(&format!(".{domain}"))
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use caduceus_config::appservice::AppserviceConfig;

    use super::*;

    #[test]
    fn example_roster_matches_by_email_or_matrix_id() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/gatekeeper.toml");
        let config = AppserviceConfig::load_with_env(Some(&file), Vec::new()).unwrap();
        let mut rosters = Rosters::new(&config.rosters);
        assert!(rosters.refresh());
        assert!(!rosters.refresh());

        let by_email =
            rosters.find("@noor:hospital.example", &["Noor.Bakker@hospital.example".into()]);
        assert_eq!(by_email.unwrap().organisation, "Example Hospital");
        assert!(rosters.find("@lars:hospital.example", &[]).is_some());
        assert!(rosters.find("@eve:hospital.example", &["eve@elsewhere.example".into()]).is_none());
    }

    #[test]
    fn trusted_domains_include_subdomains_only() {
        let domains = vec!["hospital.example".to_owned()];
        assert_eq!(trusted_domain("a@hospital.example", &domains), Some("hospital.example"));
        assert_eq!(trusted_domain("a@Cardio.Hospital.Example", &domains), Some("hospital.example"));
        assert_eq!(trusted_domain("a@evilhospital.example", &domains), None);
        assert_eq!(trusted_domain("a@hospital.example.evil", &domains), None);
        assert_eq!(trusted_domain("no-at-sign", &domains), None);
    }
}
