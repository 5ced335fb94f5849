//! Coordinates packed into one `u64` fast-field value, and great-circle distances.
//!
//! The latitude is quantized into the high 32 bits and the longitude into the low 32 bits, so a
//! range over the packed values selects a band of latitudes. The collector then checks the exact
//! distance of each candidate. A 32-bit step is under a centimetre, far below what a radius
//! search needs.

use crate::entry::Coordinates;

/// Mean earth radius in kilometres (IUGG value), as used by the haversine formula.
const EARTH_RADIUS_KM: f64 = 6_371.008_8;
/// Kilometres per degree of latitude, for pre-filters. It is rounded down (the true value is 110.6
/// to 111.7), so that a pre-filter never rejects a point within the radius.
pub(crate) const KM_PER_DEGREE_LATITUDE: f64 = 110.5;

/// Largest quantized value. One below `u32::MAX`, so that no packed point equals `u64::MAX`,
/// which the column cache uses to mark "no coordinates".
const STEPS: u32 = u32::MAX - 1;

fn quantize(value: f64, min: f64, max: f64) -> u64 {
    let unit = ((value - min) / (max - min)).clamp(0.0, 1.0);
    (unit * f64::from(STEPS)).round() as u64
}

fn dequantize(value: u64, min: f64, max: f64) -> f64 {
    min + (value as f64 / f64::from(STEPS)) * (max - min)
}

pub(crate) fn pack(point: Coordinates) -> u64 {
    (quantize(point.lat, -90.0, 90.0) << 32) | quantize(point.lon, -180.0, 180.0)
}

pub(crate) fn unpack(value: u64) -> Coordinates {
    Coordinates {
        lat: dequantize(value >> 32, -90.0, 90.0),
        lon: dequantize(value & u64::from(u32::MAX), -180.0, 180.0),
    }
}

/// Returns the range of packed values whose latitude lies within `radius_km` of `center`.
pub(crate) fn latitude_band(center: Coordinates, radius_km: f64) -> (u64, u64) {
    let degrees = radius_km / KM_PER_DEGREE_LATITUDE;
    let low = quantize(center.lat - degrees, -90.0, 90.0) << 32;
    let high = (quantize(center.lat + degrees, -90.0, 90.0) << 32) | u64::from(STEPS);
    (low, high)
}

/// Great-circle distance in kilometres (haversine formula on a spherical earth; error under 0.5 %).
pub fn distance_km(a: Coordinates, b: Coordinates) -> f64 {
    let (lat_a, lat_b) = (a.lat.to_radians(), b.lat.to_radians());
    let half_lat = (lat_b - lat_a) / 2.0;
    let half_lon = (b.lon - a.lon).to_radians() / 2.0;
    let h = half_lat.sin().powi(2) + lat_a.cos() * lat_b.cos() * half_lon.sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    const UTRECHT: Coordinates = Coordinates { lat: 52.0907, lon: 5.1214 };
    const AMSTERDAM: Coordinates = Coordinates { lat: 52.3676, lon: 4.9041 };

    #[test]
    fn packing_round_trips() {
        for point in [UTRECHT, AMSTERDAM, Coordinates { lat: -90.0, lon: 180.0 }] {
            assert_ne!(pack(point), u64::MAX);
            let back = unpack(pack(point));
            assert!((back.lat - point.lat).abs() < 1e-6, "{back:?}");
            assert!((back.lon - point.lon).abs() < 1e-6, "{back:?}");
        }
        assert_ne!(pack(Coordinates { lat: 90.0, lon: 180.0 }), u64::MAX);
    }

    #[test]
    fn utrecht_to_amsterdam() {
        let km = distance_km(UTRECHT, AMSTERDAM);
        assert!((km - 34.4).abs() < 1.0, "{km}");
    }

    #[test]
    fn band_contains_points_within_radius() {
        let (low, high) = latitude_band(UTRECHT, 40.0);
        let packed = pack(AMSTERDAM);
        assert!(low <= packed);
        assert!(packed <= high);
        let (low, high) = latitude_band(UTRECHT, 20.0);
        assert!(packed > high || packed < low);
    }
}
