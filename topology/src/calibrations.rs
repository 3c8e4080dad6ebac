//! The delay calibrations that ship with anyedge, by name and text: a leaf that the
//! schema (which names a `delay:` may take) and the parser (which reads them) both use.

/// Calibrations that ship: name, what `anyedge calibrate` wrote. Each is fitted on a
/// dataset in `data/delay/` (README there names its source, date and licence).
pub const BUILTIN: &[(&str, &str)] = &[
    ("azure-2025-06", include_str!("../../data/delay/azure-2025-06.yaml")),
    ("wondernetwork-2020-07", include_str!("../../data/delay/wondernetwork-2020-07.yaml")),
];

/// The internet's model when a file gives neither `stretch` nor `delay`: fitted on
/// measured round trips between servers on the public internet (data/delay/README.md).
pub const INTERNET_DELAY_DEFAULT: &str = "wondernetwork-2020-07";
/// The backbone's model when a file gives neither: fitted on a cloud provider's measured
/// inter-region round trips (data/delay/README.md).
pub const BACKBONE_DELAY_DEFAULT: &str = "azure-2025-06";

/// The names of the calibrations that ship.
pub const BUILTIN_DELAYS: [&str; 2] = [BUILTIN[0].0, BUILTIN[1].0];
