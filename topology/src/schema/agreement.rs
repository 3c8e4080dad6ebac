//! The schema and the parser agree: every field the schema gives a default is read as
//! that default when absent, and every bounded number (integers, floats, durations with
//! a range) is taken at its bounds and refused past them, naming the field. A field added
//! to the schema is checked here without a word more; an object the schema defines with
//! defaults but this file cannot place in a document fails the test until it can.

use serde_json::{Value, json};

use super::{FORMAT, Ty};

/// A small whole topology as JSON (which is YAML): one of every section the defaults
/// live in, each at its smallest.
fn base() -> Value {
    json!({
        "name": "agree",
        "vips": [{ "name": "edge", "ipv4": "198.18.0.20", "home": "fra", "pops": "all",
                   "listeners": [{ "protocol": "tcp", "port": 443, "backends": "web" },
                                 { "protocol": "udp", "port": 7000, "backends": "web" },
                                 { "protocol": "quic", "port": 4433, "backends": "web" },
                                 { "protocol": "https", "port": 4433, "backends": "web" }] }],
        "pops": [{ "name": "par", "location": [48.857, 2.352], "upstreams": ["t1"] }],
        "regions": [{ "name": "fra", "location": [50.11, 8.682], "health": {},
                      "backends": { "web": [{ "address": "198.19.20.10", "port": 8080 }],
                                    "api": { "members": [{ "address": "198.19.20.20", "port": 8080 }] } } }],
        "backbone": { "delay": { "default": { "stretch": 1.5 },
                                 "pairs": [{ "between": ["europe", "europe"], "stretch": 1.4 }] } },
        "internet": { "ases": [{ "name": "t1", "asn": 65001, "at": [[50.11, 8.682]], "clients": ["lon"] }] },
        "clients": [{ "name": "lon", "location": [51.507, -0.128], "traffic": ["web", "game"] }],
        "traffic": { "web": { "vip": "edge", "protocol": "tcp", "port": 443 },
                     "game": { "vip": "edge", "protocol": "udp", "port": 7000 } },
        "failover": {},
        "tls": {}
    })
}

/// Where a mapping of each kind sits in [`base`] (JSON pointer), for the fields that
/// only mean something in one place: a UDP class's, a TCP class's.
fn place(object: &str, key: &str) -> Option<&'static str> {
    Some(match object {
        "topology" => "",
        "region" => "/regions/0",
        "health" => "/regions/0/health",
        "backend" => "/regions/0/backends/web/0",
        "backend_group" => "/regions/0/backends/api",
        "listener" if key == "alpn" => "/vips/0/listeners/2",
        "listener" if key == "alt_svc" => "/vips/0/listeners/3",
        "listener" => "/vips/0/listeners/0",
        "backbone" => "/backbone",
        "delay_model" => "/backbone/delay",
        "path_params" => "/backbone/delay/default",
        "area_pair" => "/backbone/delay/pairs/0",
        "internet" => "/internet",
        "pop" => "/pops/0",
        "as" => "/internet/ases/0",
        "traffic_class" if matches!(key, "interval" | "size") => "/traffic/game",
        "traffic_class" => "/traffic/web",
        "client_group" => "/clients/0",
        "failover" => "/failover",
        "tls" => "/tls",
        _ => return None,
    })
}

fn parse(doc: &Value) -> Result<crate::Topology, crate::TopologyError> {
    crate::parse_str("agree.yaml", &serde_json::to_string(doc).expect("JSON"))
}

/// What a field means only beside: an HTTP check's path and statuses.
fn context(object: &str, key: &str) -> Option<(&'static str, Value)> {
    match (object, key) {
        ("health", "path" | "expect") => Some(("protocol", json!("http"))),
        ("listener", "table") => Some(("scheduler", json!("maglev"))),
        ("traffic_class", "rate") => Some(("kind", json!("syn-flood"))),
        _ => None,
    }
}

/// The base document with the field's context, and the field itself when given.
fn with_field(object: &str, key: &str, value: Option<Value>) -> Value {
    let mut doc = base();
    let at = place(object, key).unwrap_or_else(|| panic!("no place in the test document for `{object}`"));
    let target = doc.pointer_mut(at).and_then(Value::as_object_mut).expect("the place is a mapping");
    if let Some((k, v)) = context(object, key) {
        target.insert(k.to_string(), v);
    }
    if let Some(value) = value {
        target.insert(key.to_string(), value);
    }
    doc
}

fn with(object: &str, key: &str, value: Value) -> Value {
    with_field(object, key, Some(value))
}

#[test]
fn the_base_document_is_a_valid_topology() {
    parse(&base()).expect("the base document parses");
}

#[test]
fn every_default_the_schema_shows_is_what_the_parser_takes_when_the_field_is_absent() {
    let mut checked = 0;
    for o in FORMAT.iter() {
        for f in o.fields.iter().filter(|f| f.default.is_some()) {
            let value = f.default.clone().expect("filtered");
            // Defaults that name a model leave `delay` written out in the base document.
            if (o.name, f.key) == ("backbone", "delay") {
                continue;
            }
            let plain = parse(&with_field(o.name, f.key, None)).expect("the base document parses");
            let mut explicit = parse(&with(o.name, f.key, value.clone()))
                .unwrap_or_else(|e| panic!("{}.{} = {value} (the schema's default) is refused: {e}", o.name, f.key));
            // A last mile written out is the file's, not the assumption the report names.
            explicit.internet.last_mile_source = plain.internet.last_mile_source;
            assert_eq!(
                explicit, plain,
                "{}.{}: the schema's default {value} is not what the parser takes",
                o.name, f.key
            );
            checked += 1;
        }
    }
    assert!(checked >= 35, "only {checked} defaults checked");
}

/// The bounds of a field's range as the file would write them, with the values just
/// past them, when the type has a range.
fn bounds(ty: &Ty) -> Option<([Value; 2], [Value; 2])> {
    match ty {
        // Past i64's ends a file's number is no integer at all.
        Ty::Int { min, max } if *max < i64::MAX => Some(([json!(min), json!(max)], [json!(min - 1), json!(max + 1)])),
        Ty::Float { min, max } => {
            let past = |x: f64, by: f64| json!(x + by);
            Some(([json!(min), json!(max)], [past(*min, -min.abs().max(1.0) * 1e-3), past(*max, max.abs() * 1e-3)]))
        }
        Ty::DurationIn { min_ns, max_ns } => {
            let ns = |n: u64| json!(format!("{n}ns"));
            let below = min_ns.checked_sub(1).map(ns);
            Some(([ns(*min_ns), ns(*max_ns)], [below.unwrap_or(json!("-1ns")), ns(max_ns + 1)]))
        }
        _ => None,
    }
}

#[test]
fn every_range_the_schema_shows_is_the_parsers_at_both_ends() {
    let mut checked = 0;
    for o in FORMAT.iter() {
        for f in &o.fields {
            let (Some((inside, outside)), Some(_)) = (bounds(&f.ty), place(o.name, f.key)) else { continue };
            for v in inside {
                // Other rules may refuse a bound (a count past the file's total): none may
                // call it out of range.
                if let Err(e) = parse(&with(o.name, f.key, v.clone())) {
                    let text = e.to_string();
                    assert!(
                        !text.contains("outside") && !text.contains("must lie within"),
                        "{}.{} = {v} is in the schema's range yet refused as out of it: {text}",
                        o.name,
                        f.key
                    );
                }
            }
            for v in outside {
                let e = parse(&with(o.name, f.key, v.clone()))
                    .err()
                    .unwrap_or_else(|| panic!("{}.{} = {v} is past the schema's range yet taken", o.name, f.key));
                assert!(
                    e.to_string().contains(f.key),
                    "{}.{} = {v} refused without naming the field: {e}",
                    o.name,
                    f.key
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} ranges checked");
}
