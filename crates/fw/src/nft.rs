//! Running the `nft` binary, and reading its JSON listings.
//!
//! Scripts go to `nft -f -` on standard input, never through a shell, so nothing in a
//! policy can be read as a shell command. The binary's path is a parameter so that
//! tests can put a failing or misbehaving `nft` in its place.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// An `nft` call that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NftError {
    /// The binary could not be started.
    #[error("running {program}: {source} (is the nftables package installed?)")]
    Spawn {
        /// The path tried.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// nft refused (a transaction refused changes nothing).
    #[error("nft {action} failed: {stderr}")]
    Refused {
        /// What was asked of it.
        action: String,
        /// nft's own explanation.
        stderr: String,
    },
    /// nft's JSON output could not be read.
    #[error("reading nft's JSON output: {0}")]
    Json(#[from] serde_json::Error),
}

/// The `nft` binary.
#[derive(Debug, Clone)]
pub struct Nft {
    program: PathBuf,
}

impl Default for Nft {
    fn default() -> Self {
        Nft::new("nft")
    }
}

impl Nft {
    /// `nft` at `program` (a bare name is looked up in `PATH`).
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Nft {
            program: program.into(),
        }
    }

    /// The path it runs.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Loads `script` as one transaction (`nft -f -`): all of it, or nothing.
    pub fn load(&self, script: &str) -> Result<(), NftError> {
        let mut child = Command::new(&self.program)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| self.spawn_error(source))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A write error means nft exited early; its status and stderr say why.
            let _ = stdin.write_all(script.as_bytes());
        }
        let output = child
            .wait_with_output()
            .map_err(|source| self.spawn_error(source))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(NftError::Refused {
                action: "-f (load)".to_owned(),
                stderr: stderr_of(&output.stderr, output.status),
            })
        }
    }

    /// `nft ARGS…`, its standard output.
    pub fn run(&self, args: &[&str]) -> Result<String, NftError> {
        let output = Command::new(&self.program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| self.spawn_error(source))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(NftError::Refused {
                action: args.join(" "),
                stderr: stderr_of(&output.stderr, output.status),
            })
        }
    }

    /// True if table `inet NAME` exists.
    pub fn table_exists(&self, name: &str) -> Result<bool, NftError> {
        let listing: Value = serde_json::from_str(&self.run(&["-j", "list", "tables"])?)?;
        Ok(objects(&listing, "table").any(|table| {
            table.get("family").and_then(Value::as_str) == Some("inet")
                && table.get("name").and_then(Value::as_str) == Some(name)
        }))
    }

    /// Table `inet NAME` as a script that recreates it (stateless: no counter values),
    /// or `None` if it does not exist.
    pub fn save_table(&self, name: &str) -> Result<Option<String>, NftError> {
        if !self.table_exists(name)? {
            return Ok(None);
        }
        self.run(&["-s", "list", "table", "inet", name]).map(Some)
    }

    /// The counters and sets of table `inet NAME`, or `None` if it does not exist.
    pub fn table_status(&self, name: &str) -> Result<Option<TableStatus>, NftError> {
        if !self.table_exists(name)? {
            return Ok(None);
        }
        let json = self.run(&["-j", "list", "table", "inet", name])?;
        Ok(Some(TableStatus::parse(&json)?))
    }

    fn spawn_error(&self, source: std::io::Error) -> NftError {
        NftError::Spawn {
            program: self.program.display().to_string(),
            source,
        }
    }
}

/// Most of nft's message kept: it echoes the refused statement, which for a batch of
/// bans can hold thousands of elements, and the message goes to the log.
const MAX_MESSAGE: usize = 2000;

fn stderr_of(stderr: &[u8], status: std::process::ExitStatus) -> String {
    let mut text = String::from_utf8_lossy(stderr).trim().to_owned();
    if text.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    if text.is_empty() {
        format!("no message ({status})")
    } else {
        text
    }
}

/// The objects of one kind (`rule`, `set`, `table`) in an `nft -j` listing.
fn objects<'a>(listing: &'a Value, kind: &'a str) -> impl Iterator<Item = &'a Value> {
    listing
        .get("nftables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(move |object| object.get(kind))
}

/// One rule's counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCounter {
    /// The chain holding it.
    pub chain: String,
    /// Its comment (the compiler names every rule there), or `#handle` without one.
    pub name: String,
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted.
    pub bytes: u64,
}

/// One set's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSize {
    /// Its name.
    pub name: String,
    /// Elements it holds now.
    pub elements: usize,
}

/// What `nft -j list table` says about a table's counters and sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableStatus {
    /// Every rule with a counter, in chain order.
    pub rules: Vec<RuleCounter>,
    /// Every set.
    pub sets: Vec<SetSize>,
}

impl TableStatus {
    /// Reads an `nft -j list table` output.
    pub fn parse(json: &str) -> Result<TableStatus, serde_json::Error> {
        let listing: Value = serde_json::from_str(json)?;
        let mut status = TableStatus::default();
        for rule in objects(&listing, "rule") {
            let counter = rule
                .get("expr")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find_map(|expr| expr.get("counter"));
            let Some(counter) = counter else { continue };
            let number = |key| counter.get(key).and_then(Value::as_u64).unwrap_or(0);
            let name = match rule.get("comment").and_then(Value::as_str) {
                Some(comment) => comment.to_owned(),
                None => format!(
                    "#{}",
                    rule.get("handle").and_then(Value::as_u64).unwrap_or(0)
                ),
            };
            status.rules.push(RuleCounter {
                chain: text(rule, "chain"),
                name,
                packets: number("packets"),
                bytes: number("bytes"),
            });
        }
        for set in objects(&listing, "set") {
            status.sets.push(SetSize {
                name: text(set, "name"),
                elements: set
                    .get("elem")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len),
            });
        }
        Ok(status)
    }

    /// The counter of the rule named `name`, if there is one.
    pub fn rule(&self, name: &str) -> Option<&RuleCounter> {
        self.rules.iter().find(|rule| rule.name == name)
    }
}

fn text(object: &Value, key: &str) -> String {
    object
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_reads_counters_by_comment_and_counts_set_elements() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "inet", "name": "sipwall", "handle": 1}},
            {"set": {"family": "inet", "name": "blocklist4", "table": "sipwall",
                     "type": "ipv4_addr", "flags": ["interval"],
                     "elem": [{"prefix": {"addr": "10.0.0.0", "len": 8}}, "192.0.2.1"]}},
            {"set": {"family": "inet", "name": "admin6", "table": "sipwall",
                     "type": "ipv6_addr", "flags": ["interval"]}},
            {"rule": {"family": "inet", "table": "sipwall", "chain": "input", "handle": 7,
                      "comment": "blocklist",
                      "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip",
                               "field": "saddr"}}, "right": "@blocklist4"}},
                               {"counter": {"packets": 3, "bytes": 252}}, {"drop": null}]}},
            {"rule": {"family": "inet", "table": "sipwall", "chain": "input", "handle": 8,
                      "expr": [{"counter": {"packets": 1, "bytes": 2}}, {"accept": null}]}},
            {"rule": {"family": "inet", "table": "sipwall", "chain": "input", "handle": 9,
                      "expr": [{"accept": null}]}}]}"#;
        let status = TableStatus::parse(json).unwrap();
        assert_eq!(
            status.rules.len(),
            2,
            "a rule without a counter is not reported"
        );
        let blocklist = status.rule("blocklist").unwrap();
        assert_eq!((blocklist.packets, blocklist.bytes), (3, 252));
        assert_eq!(blocklist.chain, "input");
        assert_eq!(status.rules[1].name, "#8");
        assert_eq!(
            status.sets,
            [
                SetSize {
                    name: "blocklist4".into(),
                    elements: 2
                },
                SetSize {
                    name: "admin6".into(),
                    elements: 0
                }
            ]
        );
    }

    #[test]
    fn a_missing_binary_is_a_spawn_error_naming_it() {
        let nft = Nft::new("/nonexistent/nft");
        let error = nft.load("list tables").unwrap_err();
        assert!(matches!(error, NftError::Spawn { .. }), "{error}");
        assert!(error.to_string().contains("/nonexistent/nft"), "{error}");
    }
}
