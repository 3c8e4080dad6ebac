//! Changes to a topology file's fields named by path, applied to its YAML before the file
//! is checked — what `anyedge sweep --set PATH=VALUE` varies. A path is keys joined by
//! dots, each key optionally followed by `[N]` (the Nth item of a list, from 0) or
//! `[NAME]` (the item whose `name` is NAME): `failover.probe_interval`, `backbone.loss`,
//! `vips[0].listeners[1].scheduler`, `clients[london].count`. A key a mapping lacks is
//! added (the file's own checks then refuse a field that does not exist); an index past
//! a list's end, or a name no item has, is refused naming the path.

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode, Node};

/// One field to set: its path and the value, as YAML scalar text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub path: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
    Named(String),
}

/// `a.b[0].c[name]` → its steps, or why it is not a path.
// String: the reason of `apply`'s diagnostic for `--set PATH`.
fn steps(path: &str) -> Result<Vec<Step>, String> {
    let mut out = Vec::new();
    if path.is_empty() {
        return Err("an empty path".into());
    }
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        let key_ok = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !key_ok {
            return Err(format!("`{part}`: a step is a field name (letters, digits, _ and -), then [N] or [NAME]"));
        }
        out.push(Step::Key(key.to_string()));
        while !rest.is_empty() {
            let close = rest.find(']').filter(|_| rest.starts_with('['));
            let Some(close) = close else { return Err(format!("`{part}`: write an item as [N] or [NAME]")) };
            let inner = &rest[1..close];
            if inner.is_empty() {
                return Err(format!("`{part}`: an empty [ ]"));
            }
            out.push(match inner.parse::<usize>() {
                Ok(n) => Step::Index(n),
                Err(_) => Step::Named(inner.to_string()),
            });
            rest = &rest[close + 1..];
        }
    }
    Ok(out)
}

/// Applies `o` to the document, or says why it cannot (naming the path).
// String: the reason of a `--set` diagnostic, which `load_with` puts in a `Diagnostic`.
pub(crate) fn apply(root: &mut Node, o: &Override) -> Result<(), String> {
    let steps = steps(&o.path)?;
    let mut node = root;
    let mut walked = String::new();
    for (i, step) in steps.iter().enumerate() {
        let last = i + 1 == steps.len();
        let span = *node.span();
        node = match (step, node) {
            (Step::Key(k), Node::Mapping(map)) => {
                if !map.contains_key(k.as_str()) {
                    let fresh = if last {
                        Node::Scalar(MarkedScalarNode::new(span, ""))
                    } else {
                        Node::Mapping(MarkedMappingNode::new_empty(span))
                    };
                    map.insert(MarkedScalarNode::new(span, k.clone()), fresh);
                }
                map.get_mut(k.as_str()).ok_or_else(|| format!("cannot add `{k}`"))?
            }
            (Step::Index(n), Node::Sequence(seq)) => {
                let len = seq.len();
                seq.get_mut(*n).ok_or_else(|| {
                    let items = if len == 1 { "1 item".to_string() } else { format!("{len} items") };
                    format!("`{walked}` holds {items}, [{n}] is past its end")
                })?
            }
            (Step::Named(name), Node::Sequence(seq)) => {
                let found = seq.iter().position(|item| {
                    item.as_mapping().and_then(|m| m.get_scalar("name")).is_some_and(|s| s.as_str() == name)
                });
                let Some(at) = found else { return Err(format!("no item of `{walked}` is named `{name}`")) };
                &mut seq[at]
            }
            (Step::Key(k), _) => return Err(format!("`{walked}` is not a mapping, so it has no `{k}`")),
            (_, _) => return Err(format!("`{walked}` is not a list")),
        };
        match step {
            Step::Key(k) if walked.is_empty() => walked = k.clone(),
            Step::Key(k) => walked = format!("{walked}.{k}"),
            Step::Index(n) => walked = format!("{walked}[{n}]"),
            Step::Named(name) => walked = format!("{walked}[{name}]"),
        }
    }
    // The value keeps the place of what it replaces, so a refusal points at that line.
    let span = *node.span();
    *node = value_node(span, &o.value);
    Ok(())
}

/// A value as a node: `[a, b]` a list of scalars (a POP's `upstreams`), else a scalar.
fn value_node(span: marked_yaml::Span, value: &str) -> Node {
    let list = value.trim().strip_prefix('[').and_then(|v| v.strip_suffix(']'));
    match list {
        Some(items) => {
            let items = items
                .split(',')
                .map(str::trim)
                .filter(|i| !i.is_empty())
                .map(|i| Node::Scalar(MarkedScalarNode::new(span, i.to_string())))
                .collect();
            Node::Sequence(marked_yaml::types::MarkedSequenceNode::new(span, items))
        }
        None => Node::Scalar(MarkedScalarNode::new(span, value.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = include_str!("../../topologies/small.yaml");

    fn set(path: &str, value: &str) -> Override {
        Override { path: path.into(), value: value.into() }
    }

    #[test]
    fn a_set_field_is_what_the_parsed_world_holds() {
        let t = crate::parse_with("small.yaml", SMALL, &[set("failover.probe_interval", "20ms")]).unwrap();
        assert_eq!(t.failover.probe_interval_ns, 20_000_000);
        let t = crate::parse_with("small.yaml", SMALL, &[set("vips[0].listeners[0].scheduler", "wlc")]).unwrap();
        let before = crate::parse_str("small.yaml", SMALL).unwrap();
        assert_ne!(format!("{:?}", t.vips[0].listeners[0]), format!("{:?}", before.vips[0].listeners[0]));
        let first = before.clients[0].name.clone();
        let t = crate::parse_with("small.yaml", SMALL, &[set(&format!("clients[{first}].count"), "7")]).unwrap();
        assert_eq!(t.clients[0].count, 7);
    }

    #[test]
    fn a_path_or_value_that_does_not_fit_is_refused_naming_it() {
        let refused = |path: &str, value: &str, says: &str| {
            let e = crate::parse_with("small.yaml", SMALL, &[set(path, value)]).unwrap_err().to_string();
            assert!(e.contains(says), "{path}={value}: {e}");
        };
        refused("vips[9].name", "x", "`vips` holds 1 item, [9] is past its end");
        refused("clients[atlantis].count", "1", "no item of `clients` is named `atlantis`");
        refused("failover.probe_intervall", "20ms", "probe_intervall");
        refused("failover.probe_interval", "soon", "probe_interval");
        refused("name.first", "x", "not a mapping");
        refused("vips..name", "x", "a step is a field name");
        refused("vips[0", "x", "[N] or [NAME]");
    }
}
