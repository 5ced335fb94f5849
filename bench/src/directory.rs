//! Synthetic directory profiles and queries for benchmarks.
//!
//! [`ProfileGenerator`] yields realistic [`DirectoryEntry`] values. Names come from Dutch,
//! Belgian, German and French name lists. Professions and specialties are weighted by how common
//! they are and written in the language of the city, so the index has to resolve "Kardiologie" and
//! "cardiologue" alike. Cities come with postal codes and coordinates, and organisations are named
//! after the city's hospitals or a practice. [`QueryGenerator`] builds queries from the same tables,
//! including typos. Both are deterministic for a given seed.

mod data;

use caduceus_directory::{
    Area, Coordinates, DirectoryEntry, FacetDimension, GeoRadius, Language, SearchRequest,
    VerificationLevel, Vocabulary,
};
use rand::distributions::WeightedIndex;
use rand::prelude::*;
use rand_chacha::ChaCha8Rng;

use self::data::{City, Country, COUNTRIES};

/// Share of entries with coordinates, in percent.
const WITH_COORDINATES_PERCENT: u32 = 90;
/// Largest offset from the city centre, in degrees of latitude (about 8 km).
const MAX_LAT_OFFSET: f64 = 0.07;
/// Largest offset from the city centre, in degrees of longitude (about 7 km at 52° N).
const MAX_LON_OFFSET: f64 = 0.1;

fn label(id: &str, language: Language) -> String {
    match Vocabulary::builtin().term(id) {
        Some(term) => term.label(language).to_owned(),
        // The tables only name vocabulary ids; a unit test checks it.
        None => id.to_owned(),
    }
}

/// Lowercase ASCII for user IDs and domains: accents dropped, anything else but letters and
/// digits removed.
fn slug(text: &str) -> String {
    let mut slug = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        let folded = match c {
            'à' | 'á' | 'â' | 'ä' | 'å' => "a",
            'ç' => "c",
            'è' | 'é' | 'ê' | 'ë' => "e",
            'ì' | 'í' | 'î' | 'ï' | 'ı' => "i",
            'ñ' => "n",
            'ò' | 'ó' | 'ô' | 'ö' | 'ø' => "o",
            'ù' | 'ú' | 'û' | 'ü' => "u",
            'ş' => "s",
            'ß' => "ss",
            'œ' => "oe",
            c if c.is_ascii_alphanumeric() => {
                slug.push(c);
                continue;
            }
            _ => continue,
        };
        slug.push_str(folded);
    }
    slug
}

fn weighted(weights: &[(&'static str, u32)]) -> WeightedIndex<u32> {
    // The weight tables are constant and non-empty with positive weights.
    WeightedIndex::new(weights.iter().map(|(_, weight)| *weight)).expect("valid weight table")
}

/// Picks cities with a share that falls with their rank (Zipf-like), as city sizes do.
fn city_weights(country: &Country) -> WeightedIndex<f64> {
    WeightedIndex::new((0..country.cities.len()).map(|rank| 1.0 / (rank as f64 + 1.0)))
        .expect("every country has cities")
}

/// Tables shared by both generators.
struct Tables {
    countries: WeightedIndex<u32>,
    cities: Vec<WeightedIndex<f64>>,
    professions: WeightedIndex<u32>,
    physician_specialties: WeightedIndex<u32>,
    nurse_specialties: WeightedIndex<u32>,
}

impl Tables {
    fn new() -> Self {
        Self {
            countries: WeightedIndex::new(COUNTRIES.iter().map(|country| country.weight))
                .expect("valid country weights"),
            cities: COUNTRIES.iter().map(city_weights).collect(),
            professions: weighted(data::PROFESSIONS),
            physician_specialties: weighted(data::PHYSICIAN_SPECIALTIES),
            nurse_specialties: weighted(data::NURSE_SPECIALTIES),
        }
    }

    fn pick_place(&self, rng: &mut ChaCha8Rng) -> (&'static Country, &'static City) {
        let country_index = self.countries.sample(rng);
        (&COUNTRIES[country_index], self.pick_city(rng, country_index))
    }

    fn pick_city(&self, rng: &mut ChaCha8Rng, country_index: usize) -> &'static City {
        &COUNTRIES[country_index].cities[self.cities[country_index].sample(rng)]
    }
}

fn pick<'a>(rng: &mut ChaCha8Rng, values: &'a [&'a str]) -> &'a str {
    values.choose(rng).copied().unwrap_or_default()
}

fn percent(rng: &mut ChaCha8Rng, share: u32) -> bool {
    rng.gen_range(0..100) < share
}

/// An endless or bounded stream of synthetic profiles.
pub struct ProfileGenerator {
    rng: ChaCha8Rng,
    tables: Tables,
    next: u64,
    count: u64,
}

impl ProfileGenerator {
    pub fn new(seed: u64, count: u64) -> Self {
        Self { rng: ChaCha8Rng::seed_from_u64(seed), tables: Tables::new(), next: 0, count }
    }

    fn postal_code(&mut self, country: &Country, city: &City) -> String {
        let rng = &mut self.rng;
        match country.code {
            "NL" => {
                let letters: String =
                    (0..2).map(|_| char::from(b'A' + rng.gen_range(0..26u8))).collect();
                format!("{}{:02} {letters}", city.postal_prefix, rng.gen_range(0..100))
            }
            "BE" => format!("{}{:02}", city.postal_prefix, rng.gen_range(0..100)),
            _ => format!("{}{:03}", city.postal_prefix, rng.gen_range(0..1000)),
        }
    }

    fn area(&mut self, country: &'static Country, city: &'static City) -> Area {
        let postal_code = self.postal_code(country, city);
        let coordinates = percent(&mut self.rng, WITH_COORDINATES_PERCENT).then(|| Coordinates {
            lat: city.lat + self.rng.gen_range(-MAX_LAT_OFFSET..MAX_LAT_OFFSET),
            lon: city.lon + self.rng.gen_range(-MAX_LON_OFFSET..MAX_LON_OFFSET),
        });
        Area {
            city: Some(city.name.to_owned()),
            postal_code: Some(postal_code),
            region: Some(city.region.to_owned()),
            country: Some(country.code.to_owned()),
            coordinates,
        }
    }

    fn hospital(&mut self, city: &City) -> String {
        let pattern = pick(&mut self.rng, data::hospital_patterns(city.language));
        pattern.replace("{}", city.name)
    }

    fn specialties(&mut self, profession: &str, language: Language) -> Vec<String> {
        let (table, index, share) = match profession {
            "physician" => (data::PHYSICIAN_SPECIALTIES, &self.tables.physician_specialties, 100),
            "nurse" => (data::NURSE_SPECIALTIES, &self.tables.nurse_specialties, 40),
            _ => return Vec::new(),
        };
        let mut specialties = Vec::new();
        if percent(&mut self.rng, share) {
            specialties.push(label(table[index.sample(&mut self.rng)].0, language));
            // Some physicians hold a second specialty.
            if profession == "physician" && percent(&mut self.rng, 5) {
                let second = label(table[index.sample(&mut self.rng)].0, language);
                if !specialties.contains(&second) {
                    specialties.push(second);
                }
            }
        }
        specialties
    }

    fn generate(&mut self, index: u64) -> DirectoryEntry {
        let (country, city) = self.tables.pick_place(&mut self.rng);
        let language = city.language;
        let first_name = pick(&mut self.rng, country.first_names);
        let surname = pick(&mut self.rng, country.surnames);

        let profession = data::PROFESSIONS[self.tables.professions.sample(&mut self.rng)].0;
        let specialties = self.specialties(profession, language);
        let display_name = if profession == "physician" && percent(&mut self.rng, 25) {
            format!("Dr. {first_name} {surname}")
        } else {
            format!("{first_name} {surname}")
        };

        let works_in_practice =
            matches!(profession, "dentist" | "physiotherapist" | "psychologist")
                || specialties
                    .first()
                    .is_some_and(|first| first == &label("general_practice", language));
        let mut organisations = Vec::with_capacity(2);
        if works_in_practice && percent(&mut self.rng, 70) {
            let practice_owner = pick(&mut self.rng, country.surnames);
            organisations.push(data::practice_pattern(language).replace("{}", practice_owner));
        } else {
            organisations.push(self.hospital(city));
        }
        if percent(&mut self.rng, 10) {
            let second = self.hospital(city);
            if !organisations.contains(&second) {
                organisations.push(second);
            }
        }

        let mut areas = vec![self.area(country, city)];
        if percent(&mut self.rng, 8) {
            let country_index =
                COUNTRIES.iter().position(|known| known.code == country.code).unwrap_or_default();
            let other = self.tables.pick_city(&mut self.rng, country_index);
            if other.name != city.name {
                areas.push(self.area(country, other));
            }
        }

        let level = match self.rng.gen_range(0..100) {
            0..=59 => VerificationLevel::Medical,
            60..=94 => VerificationLevel::Identity,
            _ => VerificationLevel::Pending,
        };
        let listed = level != VerificationLevel::Pending && percent(&mut self.rng, 95);
        let domain = format!("{}.example", slug(city.name));
        let avatar_url = percent(&mut self.rng, 60).then(|| {
            let media_id: String = (0..24)
                .map(|_| char::from(self.rng.sample(rand::distributions::Alphanumeric)))
                .collect();
            format!("mxc://{domain}/{media_id}")
        });

        DirectoryEntry {
            user_id: format!("@{}.{}.{index}:{domain}", slug(first_name), slug(surname)),
            display_name: Some(display_name),
            avatar_url,
            professions: vec![label(profession, language)],
            specialties,
            organisations,
            areas,
            level,
            listed,
        }
    }
}

impl Iterator for ProfileGenerator {
    type Item = DirectoryEntry;

    fn next(&mut self) -> Option<DirectoryEntry> {
        if self.next >= self.count {
            return None;
        }
        let index = self.next;
        self.next += 1;
        Some(self.generate(index))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let remaining = (self.count - self.next) as usize;
        (remaining, Some(remaining))
    }
}

/// Benchmark queries built from the profile tables.
pub struct QueryGenerator {
    rng: ChaCha8Rng,
    tables: Tables,
    /// Share of free-text queries with one typo, in percent.
    typo_percent: u32,
}

impl QueryGenerator {
    pub fn new(seed: u64) -> Self {
        Self { rng: ChaCha8Rng::seed_from_u64(seed), tables: Tables::new(), typo_percent: 30 }
    }

    fn any_language(&mut self) -> Language {
        *Language::ALL.choose(&mut self.rng).unwrap_or(&Language::English)
    }

    fn specialty_label(&mut self) -> String {
        let table = data::PHYSICIAN_SPECIALTIES;
        let id = table[self.tables.physician_specialties.sample(&mut self.rng)].0;
        let language = self.any_language();
        label(id, language)
    }

    fn profession_label(&mut self) -> String {
        let id = data::PROFESSIONS[self.tables.professions.sample(&mut self.rng)].0;
        let language = self.any_language();
        label(id, language)
    }

    /// Applies one random edit (delete, swap, replace or insert a letter) to a word of at least
    /// five letters, if the query has one.
    fn add_typo(&mut self, query: &str) -> String {
        let mut words: Vec<Vec<char>> =
            query.split(' ').map(|word| word.chars().collect()).collect();
        let candidates: Vec<usize> =
            (0..words.len()).filter(|&index| words[index].len() >= 5).collect();
        let Some(&target) = candidates.choose(&mut self.rng) else {
            return query.to_owned();
        };
        let word = &mut words[target];
        let position = self.rng.gen_range(1..word.len() - 1);
        let letter = char::from(b'a' + self.rng.gen_range(0..26u8));
        match self.rng.gen_range(0..4) {
            0 => {
                word.remove(position);
            }
            1 => word.swap(position, position + 1),
            2 => word[position] = letter,
            _ => word.insert(position, letter),
        }
        words.iter().map(|word| word.iter().collect::<String>()).collect::<Vec<_>>().join(" ")
    }

    /// Returns a query typed in full: names, specialties and professions with places, some with a
    /// typo.
    pub fn free_text(&mut self) -> SearchRequest {
        let (country, city) = self.tables.pick_place(&mut self.rng);
        let surname = pick(&mut self.rng, country.surnames);
        let first_name = pick(&mut self.rng, country.first_names);
        let query = match self.rng.gen_range(0..100) {
            0..=29 => format!("{} {}", self.specialty_label(), city.name),
            30..=49 => surname.to_owned(),
            50..=64 => format!("{first_name} {surname}"),
            65..=74 => format!("{} {}", self.profession_label(), city.name),
            75..=84 => format!("dr {surname}"),
            85..=94 => {
                let hospital = pick(&mut self.rng, data::hospital_patterns(city.language));
                format!("{} {}", self.specialty_label(), hospital.replace("{}", city.name))
            }
            _ => self.specialty_label(),
        };
        let query =
            if percent(&mut self.rng, self.typo_percent) { self.add_typo(&query) } else { query };
        SearchRequest { query, limit: 20, ..SearchRequest::default() }
    }

    /// Returns a query filtered by specialty, place, level or radius, with four facet dimensions
    /// counted. The text is empty, a surname of the filtered country, or (without a specialty
    /// filter) a profession.
    pub fn filtered(&mut self) -> SearchRequest {
        let country_index = self.tables.countries.sample(&mut self.rng);
        let country = &COUNTRIES[country_index];
        let city = self.tables.pick_city(&mut self.rng, country_index);
        let filter_kind = self.rng.gen_range(0..4);
        let query = match self.rng.gen_range(0..100) {
            0..=39 => String::new(),
            40..=69 => pick(&mut self.rng, country.surnames).to_owned(),
            _ if filter_kind == 3 => self.profession_label(),
            _ => String::new(),
        };
        let mut request = SearchRequest { query, limit: 20, ..SearchRequest::default() };

        let specialty = data::PHYSICIAN_SPECIALTIES
            [self.tables.physician_specialties.sample(&mut self.rng)]
        .0
        .to_owned();
        let filters = &mut request.filters;
        match filter_kind {
            0 => {
                filters.specialties = vec![specialty];
                filters.cities = vec![city.name.to_owned()];
            }
            1 => {
                filters.specialties = vec![specialty];
                filters.levels = vec![VerificationLevel::Medical];
                filters.countries = vec![country.code.to_owned()];
            }
            2 => {
                filters.specialties = vec![specialty];
                filters.near = Some(GeoRadius {
                    center: Coordinates { lat: city.lat, lon: city.lon },
                    radius_km: 25.0,
                });
            }
            _ => {
                filters.regions = vec![city.region.to_owned()];
                filters.levels = vec![VerificationLevel::Identity, VerificationLevel::Medical];
            }
        }
        request.facets = vec![
            FacetDimension::Specialty,
            FacetDimension::City,
            FacetDimension::Organisation,
            FacetDimension::Level,
        ];
        request
    }

    /// Returns a query cut off while typing: at least `min_chars` letters of a surname, of "first
    /// name surname", or of a specialty.
    pub fn type_ahead(&mut self, min_chars: usize) -> SearchRequest {
        let (country, _) = self.tables.pick_place(&mut self.rng);
        let surname = pick(&mut self.rng, country.surnames);
        let first_name = pick(&mut self.rng, country.first_names);
        let full = match self.rng.gen_range(0..100) {
            0..=59 => surname.to_owned(),
            60..=84 => format!("{first_name} {surname}"),
            _ => self.specialty_label(),
        };
        let chars: Vec<char> = full.chars().collect();
        let min = min_chars.min(chars.len());
        let mut cut = self.rng.gen_range(min..=chars.len());
        // A cut right after a space would end the word; type-ahead queries end in a letter.
        while cut > min && !chars[cut - 1].is_alphanumeric() {
            cut -= 1;
        }
        let query: String = chars[..cut].iter().collect();
        // Suggestions need no exact count, which lets broad prefixes stop early.
        SearchRequest { query, limit: 10, exact_total: false, ..SearchRequest::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_deterministic() {
        let first: Vec<DirectoryEntry> = ProfileGenerator::new(7, 50).collect();
        let second: Vec<DirectoryEntry> = ProfileGenerator::new(7, 50).collect();
        let other: Vec<DirectoryEntry> = ProfileGenerator::new(8, 50).collect();
        assert_eq!(first, second);
        assert_ne!(first, other);
    }

    #[test]
    fn profiles_are_valid_and_resolve() {
        let vocabulary = Vocabulary::builtin();
        let mut user_ids = std::collections::HashSet::new();
        for entry in ProfileGenerator::new(1, 2_000) {
            entry.validate().unwrap();
            assert!(user_ids.insert(entry.user_id.clone()), "duplicate {}", entry.user_id);
            for name in entry.professions.iter().chain(&entry.specialties) {
                assert!(vocabulary.resolve(name).is_some(), "{name} is not in the vocabulary");
            }
        }
    }

    #[test]
    fn tables_name_vocabulary_ids() {
        let vocabulary = Vocabulary::builtin();
        let tables = [data::PROFESSIONS, data::PHYSICIAN_SPECIALTIES, data::NURSE_SPECIALTIES];
        for (id, _) in tables.into_iter().flatten() {
            assert!(vocabulary.term(id).is_some(), "{id}");
        }
    }

    #[test]
    fn type_ahead_ends_in_a_letter() {
        let mut queries = QueryGenerator::new(3);
        for _ in 0..500 {
            let request = queries.type_ahead(2);
            let last = request.query.chars().last().unwrap();
            assert!(last.is_alphanumeric(), "{:?}", request.query);
        }
    }

    #[test]
    fn slug_is_ascii() {
        assert_eq!(slug("Müller-Lüdenscheidt"), "mullerludenscheidt");
        assert_eq!(slug("de Vries"), "devries");
        assert_eq!(slug("Weiß"), "weiss");
    }
}
