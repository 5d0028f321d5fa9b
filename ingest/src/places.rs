//! Towns and cities of the United Kingdom, from `data/places.csv` (compiled
//! into the binary so `demo` runs from any directory).

use thiserror::Error;

/// A town with a weight for spreading a fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct Place {
    /// Name.
    pub name: String,
    /// Centre latitude.
    pub lat: f64,
    /// Centre longitude.
    pub lon: f64,
    /// Relative share of the fleet based there.
    pub weight: u32,
}

/// A line of the places file that does not parse.
#[derive(Debug, Error, PartialEq)]
#[error("places.csv line {line}: {reason}")]
pub struct PlaceError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// The places file shipped in `data/`.
pub const PLACES_CSV: &str = include_str!("../../data/places.csv");

/// Parses `name,lat,lon,weight` lines after a header.
///
/// # Errors
/// The first line that does not parse.
pub fn parse(csv: &str) -> Result<Vec<Place>, PlaceError> {
    csv.lines()
        .enumerate()
        .skip(1)
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let err = |reason: &str| PlaceError {
                line: i + 1,
                reason: reason.to_owned(),
            };
            let f: Vec<&str> = l.split(',').collect();
            if f.len() != 4 {
                return Err(err("expected 4 fields"));
            }
            let num = |s: &str, what: &str| s.trim().parse::<f64>().map_err(|_| err(what));
            Ok(Place {
                name: f[0].to_owned(),
                lat: num(f[1], "bad lat")?,
                lon: num(f[2], "bad lon")?,
                weight: f[3].trim().parse().map_err(|_| err("bad weight"))?,
            })
        })
        .collect()
}

/// The shipped places.
///
/// # Errors
/// Only if the shipped file is broken (a test guards it).
pub fn uk() -> Result<Vec<Place>, PlaceError> {
    parse(PLACES_CSV)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_places_parse_and_lie_in_the_uk() {
        let places = uk().expect("shipped file parses");
        assert!(places.len() >= 30);
        for p in places {
            assert!(
                (49.8..61.0).contains(&p.lat) && (-8.5..2.0).contains(&p.lon),
                "{p:?}"
            );
        }
    }

    #[test]
    fn bad_line_names_its_number() {
        let e = parse("h\nA,1,2,3\nB,x,2,3\n").expect_err("bad");
        assert_eq!(e.line, 3);
    }
}
