//! `anyedge calibrate` and the calibration that ships: reproducible from the dataset in
//! the repository, within its accuracy targets on pairs it never saw, and bad measurement
//! rows named by their line.

use std::process::Command;

const SHIPPED: &str = include_str!("../data/delay/azure-2025-06.yaml");
const DATASET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/delay/azure-inter-region-rtt-2025-06.csv");
const INTERNET_SHIPPED: &str = include_str!("../data/delay/wondernetwork-2020-07.yaml");
const INTERNET_DATASET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/delay/wondernetwork-2020-07-pairs.csv");

fn calibrate(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_anyedge")).arg("calibrate").args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn source_of(shipped: &'static str) -> &'static str {
    let line = shipped.lines().find(|l| l.trim_start().starts_with("source:")).expect("a source line");
    line.split_once('"').and_then(|(_, rest)| rest.strip_suffix('"')).expect("a quoted source")
}

/// The model lines of `calibrate`'s output, without the comments (the error figures).
fn model_lines(text: &str) -> Vec<String> {
    text.lines().filter(|l| !l.starts_with('#')).map(str::to_owned).collect()
}

#[test]
fn the_shipped_backbone_calibration_is_what_calibrate_fits_on_the_shipped_dataset() {
    let (code, stdout, stderr) =
        calibrate(&[DATASET, "--model", "areas", "--name", "azure-2025-06", "--source", source_of(SHIPPED)]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        model_lines(&stdout),
        model_lines(SHIPPED),
        "rerun the command in data/delay/README.md and commit its output"
    );
    let shipped = anyedge_topology::builtin_delay("azure-2025-06").expect("the shipped calibration parses");
    assert!(shipped.pairs.len() >= 20, "per-area-pair parameters: {shipped:?}");
    assert!(shipped.pairs.values().any(|p| p.via.is_some()), "some pairs detour through a hub");
}

/// One run of the documented command on the internet's dataset, with `--areas`: the
/// shipped per-place model is what it fits, within target on the dataset's own pairs and
/// on servers it never saw, with the short-path floor and the per-area errors printed.
#[test]
fn the_shipped_internet_calibration_is_what_calibrate_fits_and_is_within_target_on_servers_it_never_saw() {
    let name = "wondernetwork-2020-07";
    let (code, stdout, stderr) =
        calibrate(&[INTERNET_DATASET, "--name", name, "--source", source_of(INTERNET_SHIPPED), "--areas"]);
    assert_eq!(code, Some(0), "{stderr}");
    let model = stdout.split("\nerror per pair of areas").next().unwrap();
    assert_eq!(
        model_lines(model),
        model_lines(INTERNET_SHIPPED),
        "rerun the command in data/delay/README.md and commit its output"
    );
    let shipped = anyedge_topology::builtin_delay(name).expect("the shipped calibration parses");
    let landmarks = shipped.landmarks.as_ref().expect("a per-place model");
    assert!(landmarks.landmarks.len() > 200, "the dataset's servers are its landmarks");
    assert!(shipped.pairs.is_empty(), "no rule for a pair of areas");

    for length in ["≥ 1000 km", "< 1000 km"] {
        let [median, ..] = figures(&stdout, &format!("in sample {length}"));
        assert!(median <= 5.0, "in sample, {length}: median {median} %");
    }
    let [median, p90, bias] = figures(&stdout, "held out  ≥ 1000 km");
    assert!(
        median <= 12.0 && p90 <= 35.0 && bias.abs() <= 5.0,
        "held out by server, long: {median} / {p90} / {bias} %"
    );
    let [short, ..] = figures(&stdout, "held out  < 1000 km");
    assert!(short <= 25.0, "held out by server, short: median {short} %");
    assert!(stdout.contains("short-path floor at 0 km"), "the fitted floor is shown:\n{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("#   europe ") && l.contains(" ms [")),
        "the floor per area:\n{stdout}"
    );

    let table = stdout.split("error per pair of areas (held-out pairs").nth(1).expect("the table follows the model");
    let row = table.lines().find(|l| l.starts_with("europe/europe ")).expect("a row for europe/europe");
    let cells: Vec<&str> = row.split_whitespace().collect();
    let long: usize = cells[1].parse().unwrap();
    assert!(long > 100, "europe/europe has hundreds of held-out long pairs: {row}");
    assert!(row.ends_with("per place"), "{row}");
}

#[test]
fn a_topology_without_an_internet_model_gets_the_calibrated_one_and_the_last_mile_is_called_assumed() {
    let shipped = anyedge_topology::builtin_delay(anyedge_topology::INTERNET_DELAY_DEFAULT).unwrap();
    let small = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/topologies/small.yaml")).unwrap();
    let line = small.lines().find(|l| l.starts_with("internet:")).expect("small.yaml has an internet line");
    let bare = small.replace(line, "internet: { jitter: 2ms, loss: 0.2%, routing: nearest }");
    let t = anyedge_topology::parse_str("bare.yaml", &bare).expect("parses");
    assert_eq!(t.internet.delay, shipped, "the default internet model is the shipped calibration");
    assert_eq!(t.internet.last_mile_source, "assumed, not measured");
    let given = small.replace(line, "internet: { last_mile: 3ms }");
    let t = anyedge_topology::parse_str("given.yaml", &given).expect("parses");
    assert_eq!(t.internet.last_mile_source, "set in the topology file");
}

/// (median, p90, bias) in % from a summary line of `calibrate`'s output.
fn figures(stdout: &str, prefix: &str) -> [f64; 3] {
    let line = stdout.lines().find(|l| l.contains(prefix)).unwrap_or_else(|| panic!("no `{prefix}` line:\n{stdout}"));
    let num = |key: &str| -> f64 {
        let rest = &line[line.find(key).unwrap() + key.len()..];
        let token: String =
            rest.trim_start().chars().take_while(|c| c.is_ascii_digit() || "+-.".contains(*c)).collect();
        token.parse().unwrap_or_else(|_| panic!("`{key}` in {line}"))
    };
    [num("median error"), num("p90"), num("bias")]
}

#[test]
fn the_backbone_model_is_within_target_on_long_pairs_it_was_not_fitted_on() {
    let (code, stdout, stderr) = calibrate(&[DATASET, "--model", "areas", "--holdout", "3"]);
    assert_eq!(code, Some(0), "{stderr}");
    let [median, p90, bias] = figures(&stdout, "held out  ≥ 1000 km");
    assert!(median <= 15.0 && p90 <= 40.0 && bias.abs() <= 5.0, "held out, long: {median} / {p90} / {bias} %");
    let [fitted_median, ..] = figures(&stdout, "fitted    ≥ 1000 km");
    assert!(fitted_median <= median + 5.0, "fitted {fitted_median} % vs held out {median} %: not overfitted");
}

#[test]
fn bad_measurement_rows_are_named_by_their_line_and_nothing_is_fitted() {
    let dir = std::env::temp_dir().join(format!("anyedge-calibrate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.csv");
    let text = "a,b,a_lat,a_lon,b_lat,b_lon,rtt_ms\n\
                london,paris,51.507,-0.128,48.857,2.352,8.1\n\
                london,nowhere,95,0,48.857,2.352,9\n\
                london,paris,51.507,-0.128,48.857,2.352,fast\n\
                london,sydney,51.507,-0.128,-33.869,151.209,100\n\
                london,paris,51.507,-0.128,48.857\n";
    std::fs::write(&file, text).unwrap();
    let (code, stdout, stderr) = calibrate(&[file.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stdout.is_empty(), "nothing fitted: {stdout}");
    let name = file.display().to_string();
    for want in [
        format!("{name}:3: a_lat: 95 is outside -90–90"),
        format!("{name}:4: rtt_ms: `fast` is not a number"),
        format!("{name}:5: rtt_ms: 100 ms is faster than light in fibre"),
        format!("{name}:6: b_lon: missing (the row has 5 cells)"),
    ] {
        assert!(stderr.contains(&want), "wanted `{want}` in:\n{stderr}");
    }
    std::fs::write(&file, "a_lat,a_lon,rtt_ms\n1,2,3\n").unwrap();
    let (code, _, stderr) = calibrate(&[file.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains(":1: header lacks column(s) b_lat, b_lon"), "{stderr}");
    // One server at two places: the per-place model cannot say which is the landmark.
    std::fs::write(
        &file,
        "a,b,a_lat,a_lon,b_lat,b_lon,rtt_ms\n\
         london,paris,51.507,-0.128,48.857,2.352,8.1\n\
         paris,berlin,48.857,2.352,52.52,13.405,15\n\
         london,berlin,51.6,-0.128,52.52,13.405,16\n",
    )
    .unwrap();
    let (code, stdout, stderr) = calibrate(&[file.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stdout.is_empty(), "nothing fitted: {stdout}");
    assert!(stderr.contains(&format!("{name}:4: `london` is at [51.6, -0.128] here")), "{stderr}");
    let (code, _, stderr) = calibrate(&[INTERNET_DATASET, "--holdout", "3"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--holdout splits rows for `--model areas`"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn delay(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_anyedge")).arg("delay").args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn delay_prints_the_round_trip_and_the_measured_pairs_it_rests_on() {
    let (code, stdout, stderr) = delay(&["Lagos", "Accra"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("Lagos/NG") && stdout.contains("Accra/GH"), "{stdout}");
    let rtt: f64 = stdout.lines().nth(1).and_then(|l| l.split(" ms round trip").next()).unwrap().parse().unwrap();
    assert!(rtt > 150.0, "Lagos–Accra trombones through Europe in the data (193 ms): {stdout}");
    assert!(stdout.contains("Lagos – Accra: 192.6 ms"), "the measured pair and its weight: {stdout}");
    assert!(stdout.contains(" km (light in fibre"), "the distance: {stdout}");
    // Accents are optional (the cities' names are GeoNames' ASCII ones), and a name's
    // first words find it.
    let (code, stdout, stderr) = delay(&["São Paulo", "Osaka"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with("Sao Paulo/BR") && stdout.contains("Osaka-shi/JP"), "{stdout}");
    // Coordinates work as places; far from every server, the distance law says so.
    let (code, stdout, _) = delay(&["-10.0,-140.0", "-12.0,-141.0"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("no measured server within"), "{stdout}");
}

#[test]
fn delay_names_an_unknown_place_or_coordinates_out_of_range() {
    for (args, want) in [
        (["Xanadu-on-Sea", "Lagos"], "`Xanadu-on-Sea`: no such place in data/geo/cities.tsv"),
        (["Lagos", "95,10"], "`95,10`: latitude: 95 is outside -90–90"),
        (["10,200", "Lagos"], "`10,200`: longitude: 200 is outside -180–180"),
    ] {
        let (code, stdout, stderr) = delay(&args);
        assert_eq!(code, Some(2), "{args:?}: {stdout}");
        assert!(stderr.contains(want), "{args:?}: wanted `{want}` in {stderr}");
    }
    let (code, _, stderr) = delay(&["Lagos", "Accra", "--model", "nonesuch"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--model `nonesuch`: no calibration that ships"), "{stderr}");
}

/// `calibrate --anycast` prints, per service of the shipped measurements, the measured
/// p50 / p90 / p99 beside the nearest-site rule and BGP over the default internet; the
/// measured figures of K, L and M are issue 73's table.
#[test]
fn calibrate_anycast_prints_each_services_measured_tail_beside_the_models() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/data/anycast");
    let (code, stdout, stderr) = calibrate(&["--anycast", dir, "--seeds", "2"]);
    assert_eq!(code, Some(0), "{stderr}");
    let services = ["cloudflare", "cloudflare-europe", "root-c", "root-h", "root-i", "root-k", "root-l", "root-m"];
    for name in services {
        let row = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{stdout}"));
        // sites, VPs, then three columns of p50/p90/p99, the two errors, the share left
        // without a route, and the operator.
        let words: Vec<&str> = row.split_whitespace().collect();
        let numbers: Vec<f64> = words[2..15].iter().map(|w| w.parse().unwrap_or(f64::NAN)).collect();
        assert!(numbers.iter().all(|n| !n.is_nan()), "{row}");
        assert!(words[15].ends_with('%') && words[17] == "transits", "{row}");
        assert!(numbers[1] > 900.0, "{name}: fewer than 900 vantage points: {row}");
        for tail in numbers[2..11].chunks(3) {
            assert!(tail[0] > 0.0 && tail[0] <= tail[1] && tail[1] <= tail[2], "{name}: {row}");
        }
    }
    let measured = |name: &str| {
        let row = stdout.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap();
        row.split_whitespace().skip(4).take(3).map(|w| w.parse::<f64>().unwrap()).collect::<Vec<_>>()
    };
    // data/anycast/README.md shows this run whole (the shipped shape, each service with
    // the shipped operator), and its fit's table, whose held-out services were simulated
    // with the same shape and operator: their rows are the same in both.
    let readme = include_str!("../data/anycast/README.md");
    let (code, shipped, stderr) = calibrate(&["--anycast", "data/anycast", "--seeds", "2"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(readme.contains(&shipped), "rerun the fit in data/anycast/README.md; the shipped shape prints:\n{shipped}");
    for name in ["cloudflare-europe", "root-k", "root-l", "root-m"] {
        let rows: Vec<&str> = readme.lines().filter(|l| l.starts_with(&format!("{name} "))).collect();
        assert_eq!(rows.len(), 2, "{name}: in the fit's table and the shipped shape's");
        assert_eq!(rows[0], rows[1], "{name}: the fit's table shows what the shipped shape prints");
    }
    assert_eq!(measured("root-k"), [17.1, 47.4, 125.4]);
    assert_eq!(measured("root-l"), [22.7, 96.8, 235.6]);
    assert_eq!(measured("root-m"), [29.1, 167.1, 281.9]);
}

#[test]
fn anycast_measurements_with_a_bad_row_are_named_by_file_and_line() {
    let dir = std::env::temp_dir().join(format!("anyedge-anycast-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("sites.csv"), "service,site,country,lat,lon\nsvc,Paris,FR,48.85,2.35\n").unwrap();
    let pings = "service,set,measurement,probe,lat,lon,rtt_ms\nsvc,fit,1,1,48.0,2.0,5.0\nsvc,fit,1,2,95.0,2.0,5.0\n";
    std::fs::write(dir.join("pings.csv"), pings).unwrap();
    let (code, stdout, stderr) = calibrate(&["--anycast", dir.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, Some(1));
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("pings.csv:3: lat: `95.0` is not a number in"), "{stderr}");
}

/// A small set of anycast measurements: two sites, five vantage points.
fn tiny_anycast(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("anyedge-anycast-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("sites.csv"),
        "service,site,country,lat,lon\nsvc,Paris,FR,48.85,2.35\nsvc,Tokyo,JP,35.68,139.69\n",
    )
    .unwrap();
    let mut pings = String::from("service,set,measurement,probe,lat,lon,rtt_ms\n");
    for (k, (lat, lon, rtt)) in
        [(48.85, 2.35, 1.5), (52.52, 13.4, 14.0), (40.42, -3.7, 21.0), (35.68, 139.69, 2.5), (1.35, 103.8, 70.0)]
            .into_iter()
            .enumerate()
    {
        pings.push_str(&format!("svc,fit,1,{k},{lat},{lon},{rtt}\n"));
    }
    std::fs::write(dir.join("pings.csv"), pings).unwrap();
    dir
}

/// `--vantages` writes each vantage point's measured round trip beside the models', and
/// `--shape` changes the default internet's numbers for the run: a spread last mile gives
/// the access networks last miles of their own.
#[test]
fn calibrate_anycast_writes_each_vantage_point_and_takes_a_shape_to_try() {
    let dir = tiny_anycast("vp");
    let rows = |shape: &[&str]| {
        let out = dir.join("vantages.csv");
        let mut args = vec!["--anycast", dir.to_str().unwrap(), "--seeds", "1", "--vantages", out.to_str().unwrap()];
        args.extend(shape.iter().flat_map(|s| ["--shape", *s]));
        let (code, stdout, stderr) = calibrate(&args);
        assert_eq!(code, Some(0), "{stderr}");
        assert!(stdout.contains("# shape: Shape {"), "{stdout}");
        let text = std::fs::read_to_string(&out).unwrap();
        let lines: Vec<Vec<String>> =
            text.lines().skip(1).map(|l| l.split(',').map(str::to_string).collect()).collect();
        assert!(text.starts_with("service,set,vantage,lat,lon,nearest_site_km,measured_ms,"), "{text}");
        lines
    };
    let even = rows(&["last_mile_spread=0"]);
    assert_eq!(even.len(), 5);
    let measured: Vec<&str> = even.iter().map(|r| r[6].as_str()).collect();
    assert_eq!(measured, ["1.5", "14", "21", "2.5", "70"]);
    assert_eq!((even[0][5].as_str(), even[3][5].as_str()), ("0", "0"), "two vantage points at a site");
    let spread = rows(&["last_mile_spread=1.5"]);
    let internet = |r: &Vec<Vec<String>>| r.iter().map(|x| x[8].parse::<f64>().unwrap()).collect::<Vec<_>>();
    assert_ne!(internet(&even), internet(&spread), "each access network draws its own last mile");
    for (bad, why) in
        [("join=2", "join takes 0 to 1"), ("teleport=1", "no such number of the shape"), ("home", "NAME=VALUE")]
    {
        let (code, stdout, stderr) = calibrate(&["--anycast", dir.to_str().unwrap(), "--shape", bad]);
        assert_eq!(code, Some(1), "{bad}: {stdout}");
        assert!(stderr.contains(&format!("--shape `{bad}`: {why}")), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
