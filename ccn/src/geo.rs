//! Geography: great-circle distance and the propagation delay of light in fiber.

/// Mean Earth radius (IUGG), kilometres.
pub const EARTH_RADIUS_KM: f64 = 6371.0088;
/// Speed of light in optical fiber (refractive index ≈ 1.468), kilometres per second.
pub const FIBER_KM_PER_S: f64 = 204_190.0;

/// A point on Earth: latitude and longitude in degrees.
pub type Location = [f64; 2];

/// Great-circle distance between two points by the haversine formula, in km.
pub fn great_circle_km(a: Location, b: Location) -> f64 {
    let (lat1, lon1) = (a[0].to_radians(), a[1].to_radians());
    let (lat2, lon2) = (b[0].to_radians(), b[1].to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// One-way propagation delay over a fiber path `stretch` times the great-circle distance.
pub fn fiber_delay_ns(a: Location, b: Location, stretch: f64) -> u64 {
    let seconds = great_circle_km(a, b) * stretch / FIBER_KM_PER_S;
    (seconds * 1e9).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beijing_to_frankfurt_is_about_7800_km() {
        let km = great_circle_km([39.904, 116.407], [50.110, 8.682]);
        assert!((7700.0..7900.0).contains(&km), "{km}");
    }

    #[test]
    fn delay_scales_with_stretch() {
        let a = [0.0, 0.0];
        let b = [0.0, 90.0];
        let one = fiber_delay_ns(a, b, 1.0);
        let two = fiber_delay_ns(a, b, 2.0);
        assert!((two as i64 - 2 * one as i64).abs() <= 1);
        // a quarter of the equator: 10,007.5 km / 204,190 km/s = 49.01 ms
        assert!((49_000_000..49_030_000).contains(&one), "{one}");
    }
}
