//! Shards and parts: one run's seeds split over many processes (a Slurm job array, a
//! Kubernetes Indexed Job, or shells by hand), each writing a part file that records what
//! made it — the binary, the topology file's bytes and the options — so `anyedge merge`
//! can refuse parts that do not belong together and rebuild exactly the report one
//! process would have written.

use anyhow::anyhow;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Shard `index` of `count` (0-based, like `JOB_COMPLETION_INDEX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

/// The part format's version; a merge refuses any other.
pub const PART_VERSION: u32 = 1;

impl Shard {
    /// `I/N`, with 0 ≤ I < N.
    pub fn parse(text: &str) -> anyhow::Result<Shard> {
        let (i, n) = text.split_once('/').ok_or_else(|| anyhow!("--shard {text}: write it as I/N, e.g. 0/4"))?;
        let num = |s: &str, what: &str| {
            s.trim().parse::<u64>().map_err(|_| anyhow!("--shard {text}: {what} `{s}` is not a whole number"))
        };
        let (index, count) = (num(i, "the index")?, num(n, "the count")?);
        if count == 0 || index >= count {
            return Err(anyhow!("--shard {text}: the index counts from 0 and stays below the count"));
        }
        Ok(Shard { index, count })
    }

    /// The shard a job scheduler gave this process: Slurm's array task (its id less the
    /// array's first id, of the array's task count), or a Kubernetes Indexed Job's
    /// completion index with the count in `ANYEDGE_SHARDS`. None outside such a job.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Shard>> {
        let num = |name: &str| -> anyhow::Result<Option<u64>> {
            match var(name) {
                None => Ok(None),
                Some(v) => v.trim().parse().map(Some).map_err(|_| anyhow!("{name}={v}: not a whole number")),
            }
        };
        let (index, count, from) =
            if let (Some(id), Some(count)) = (num("SLURM_ARRAY_TASK_ID")?, num("SLURM_ARRAY_TASK_COUNT")?) {
                let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
                (
                    id.checked_sub(min).ok_or_else(|| anyhow!("SLURM_ARRAY_TASK_ID is below SLURM_ARRAY_TASK_MIN"))?,
                    count,
                    "SLURM_ARRAY_TASK_*",
                )
            } else if let Some(index) = num("JOB_COMPLETION_INDEX")? {
                let count = num("ANYEDGE_SHARDS")?.ok_or_else(|| {
                    anyhow!("JOB_COMPLETION_INDEX is set but ANYEDGE_SHARDS (the Job's completions) is not")
                })?;
                (index, count, "JOB_COMPLETION_INDEX and ANYEDGE_SHARDS")
            } else {
                return Ok(None);
            };
        Shard::parse(&format!("{index}/{count}")).map(Some).map_err(|e| anyhow!("{from}: {e}"))
    }

    /// This shard's block of `total` items: items `start..end`. Blocks are contiguous, in
    /// order, differ in length by at most one, and together cover every item once.
    pub fn block(&self, total: u64) -> (u64, u64) {
        let at = |i: u64| ((total as u128 * i as u128) / self.count as u128) as u64;
        (at(self.index), at(self.index + 1))
    }
}

/// The shard to run: `--shard` when given, else the job scheduler's, else none.
pub fn chosen(flag: Option<&str>) -> anyhow::Result<Option<Shard>> {
    match flag {
        Some(text) => Shard::parse(text).map(Some),
        None => Shard::from_env(|name| std::env::var(name).ok()),
    }
}

/// SHA-256 of bytes, as hex.
pub fn digest(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// What identifies the running binary: the SHA-256 of its executable file. Parts from two
/// builds may disagree on a model's numbers, so a merge refuses to mix them.
pub fn build_id() -> anyhow::Result<String> {
    let exe = std::env::current_exe().map_err(|e| anyhow!("cannot find this executable: {e}"))?;
    let bytes = std::fs::read(&exe).map_err(|e| anyhow!("{}: {e}", exe.display()))?;
    Ok(digest(&bytes))
}

/// What makes parts belong together: the command, the build, the topology file's bytes,
/// and every option that changes the report (the seed range included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub command: String,
    pub build: String,
    /// The file as named on the command line, and its bytes' SHA-256.
    pub file: String,
    pub file_sha256: String,
    /// The options, as the report shows them (e.g. faults, duration, the grid).
    pub options: serde_json::Value,
}

impl Origin {
    pub fn new(command: &str, file: &Path, options: serde_json::Value) -> anyhow::Result<Origin> {
        let bytes = std::fs::read(file).map_err(|e| anyhow!("{}: {e}", file.display()))?;
        Ok(Origin {
            command: command.into(),
            build: build_id()?,
            file: file.display().to_string(),
            file_sha256: digest(&bytes),
            options,
        })
    }
}

/// One shard's results and where they came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Part<T> {
    pub anyedge_part: u32,
    pub origin: Origin,
    pub shard: Shard,
    /// The items this shard ran, `start..end` of the whole.
    pub items: (u64, u64),
    pub results: Vec<T>,
}

impl<T: Serialize> Part<T> {
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string(self).map_err(|e| anyhow!("{e}"))? + "\n";
        std::fs::write(path, text).map_err(|e| anyhow!("{}: cannot write: {e}", path.display()))
    }
}

/// The command that wrote the first part (`chaos` or `sweep`), to know how to merge.
pub fn command_of(paths: &[std::path::PathBuf]) -> anyhow::Result<String> {
    let first = paths.first().ok_or_else(|| anyhow!("no part files given"))?;
    let text = std::fs::read_to_string(first).map_err(|e| anyhow!("{}: {e}", first.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| anyhow!("{}: not a part file ({e})", first.display()))?;
    v["origin"]["command"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{}: not an anyedge part file of version {PART_VERSION}", first.display()))
}

/// Reads parts and checks they make one whole: one origin, one shard count, every shard
/// once. Returns them in shard order.
pub fn gather<T: for<'de> Deserialize<'de>>(paths: &[std::path::PathBuf]) -> anyhow::Result<Vec<Part<T>>> {
    let mut parts: Vec<Part<T>> = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let head: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| anyhow!("{}: not a part file ({e})", path.display()))?;
        if head.get("anyedge_part").and_then(|v| v.as_u64()) != Some(PART_VERSION.into()) {
            return Err(anyhow!("{}: not an anyedge part file of version {PART_VERSION}", path.display()));
        }
        // What made it first, so a part of another command is named as such, not as a
        // part whose results do not parse.
        let origin: Origin = serde_json::from_value(head["origin"].clone())
            .map_err(|e| anyhow!("{}: its origin: {e}", path.display()))?;
        let shard: Shard =
            serde_json::from_value(head["shard"].clone()).map_err(|e| anyhow!("{}: its shard: {e}", path.display()))?;
        if shard.index >= shard.count {
            return Err(anyhow!("{}: shard {} of {} is not a shard", path.display(), shard.index, shard.count));
        }
        if let Some(first) = parts.first() {
            let (a, b) = (&first.origin, &origin);
            let differs = if a.command != b.command {
                Some(format!("the command ({} against {})", b.command, a.command))
            } else if a.build != b.build {
                Some("the anyedge build (another binary wrote it)".to_string())
            } else if a.file_sha256 != b.file_sha256 {
                Some(format!("the topology file ({} has other bytes than {})", b.file, a.file))
            } else if a.options != b.options {
                Some(format!("the options ({} against {})", b.options, a.options))
            } else if shard.count != first.shard.count {
                Some(format!("the shard count ({} against {})", shard.count, first.shard.count))
            } else {
                None
            };
            if let Some(what) = differs {
                return Err(anyhow!("{}: differs from {} in {what}", path.display(), paths[0].display()));
            }
            if parts.iter().any(|p| p.shard.index == shard.index) {
                return Err(anyhow!("{}: shard {} is given twice", path.display(), shard.index));
            }
        }
        let part: Part<T> = serde_json::from_value(head).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        parts.push(part);
    }
    let Some(first) = parts.first() else { return Err(anyhow!("no part files given")) };
    let count = first.shard.count;
    if parts.len() as u64 != count {
        let mut missing: Vec<String> =
            (0..count).filter(|i| !parts.iter().any(|p| p.shard.index == *i)).take(10).map(|i| i.to_string()).collect();
        if missing.len() == 10 {
            missing.push("…".into());
        }
        return Err(anyhow!("{} of {count} shards given; missing: {}", parts.len(), missing.join(", ")));
    }
    parts.sort_by_key(|p| p.shard.index);
    Ok(parts)
}

/// The gathered parts as one run: their origin, their options, and every result in item
/// order, after checking each shard ran exactly its block (`total_of` the options' item
/// count; `key_at(options, k)` the key item `k` must have, `key` a result's).
pub fn join<T, O: for<'de> Deserialize<'de>, K: PartialEq>(
    parts: Vec<Part<T>>,
    total_of: impl Fn(&O) -> u64,
    key_at: impl Fn(&O, u64) -> K,
    key: impl Fn(&T) -> K,
) -> anyhow::Result<(Origin, O, Vec<T>)> {
    let origin = parts.first().map(|p| p.origin.clone()).ok_or_else(|| anyhow!("no part files given"))?;
    let options: O = serde_json::from_value(origin.options.clone()).map_err(|e| anyhow!("the parts' options: {e}"))?;
    let total = total_of(&options);
    let mut results = Vec::new();
    for p in parts {
        let (a, b) = p.shard.block(total);
        let ran_its_block = p.items == (a, b)
            && p.results.len() as u64 == b - a
            && (a..b).zip(&p.results).all(|(k, r)| key(r) == key_at(&options, k));
        if !ran_its_block {
            return Err(anyhow!(
                "shard {}/{}: its results are not the block it should have run",
                p.shard.index,
                p.shard.count
            ));
        }
        results.extend(p.results);
    }
    Ok((origin, options, results))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_every_item_once_in_order() {
        for total in [0, 1, 7, 100, 2000, 2001] {
            for count in [1, 2, 3, 4, 7, 64] {
                let mut next = 0;
                for index in 0..count {
                    let (a, b) = Shard { index, count }.block(total);
                    assert_eq!(a, next, "{total} over {count}: shard {index} starts where the last ended");
                    assert!(b - a <= total / count + 1);
                    next = b;
                }
                assert_eq!(next, total, "{total} over {count}: every item");
            }
        }
    }

    #[test]
    fn a_shard_is_read_from_the_flag_or_the_job_schedulers_variables() {
        assert_eq!(Shard::parse("2/4").ok(), Some(Shard { index: 2, count: 4 }));
        for bad in ["4/4", "1/0", "x/2", "3", "-1/2"] {
            assert!(Shard::parse(bad).unwrap_err().to_string().contains(bad), "{bad}");
        }
        fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        }
        assert_eq!(Shard::from_env(env(&[])).ok(), Some(None));
        let slurm = [("SLURM_ARRAY_TASK_ID", "5"), ("SLURM_ARRAY_TASK_COUNT", "4"), ("SLURM_ARRAY_TASK_MIN", "3")];
        assert_eq!(Shard::from_env(env(&slurm)).ok(), Some(Some(Shard { index: 2, count: 4 })));
        let k8s = [("JOB_COMPLETION_INDEX", "1"), ("ANYEDGE_SHARDS", "3")];
        assert_eq!(Shard::from_env(env(&k8s)).ok(), Some(Some(Shard { index: 1, count: 3 })));
        assert!(
            Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "1")])).unwrap_err().to_string().contains("ANYEDGE_SHARDS")
        );
        let past = [("SLURM_ARRAY_TASK_ID", "9"), ("SLURM_ARRAY_TASK_COUNT", "4")];
        assert!(Shard::from_env(env(&past)).unwrap_err().to_string().contains("SLURM_ARRAY_TASK"));
    }
}
