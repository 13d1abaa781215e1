//! The `drover` command model, read from the built binary's `--help` (an integration test
//! cannot import the binary's clap types): each command's subcommands and `--flags`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

#[derive(Debug, Default)]
pub struct CommandHelp {
    pub subcommands: BTreeSet<String>,
    pub flags: BTreeSet<String>,
}

/// The commands' help, read once per command path.
#[derive(Default)]
pub struct CliModel {
    read: BTreeMap<Vec<String>, CommandHelp>,
}

impl CliModel {
    pub fn help(&mut self, path: &[String]) -> &CommandHelp {
        self.read
            .entry(path.to_vec())
            .or_insert_with(|| parse_help(&run_help(path)))
    }

    /// Whether `args` (what follows `drover`) names commands that exist and only flags they
    /// have; the error names the first that does not.
    pub fn check(&mut self, args: &[String]) -> Result<(), String> {
        let mut path: Vec<String> = Vec::new();
        let mut rest = args;
        while let Some((first, tail)) = rest.split_first() {
            if !self.help(&path).subcommands.contains(first) {
                break;
            }
            path.push(first.clone());
            rest = tail;
        }
        if path.is_empty() {
            let first = args.first().map_or("", String::as_str);
            if !first.starts_with('-') {
                return Err(format!("`drover {first}`: no such command"));
            }
        }
        let help = self.help(&path);
        for arg in rest {
            let Some(flag) = arg.strip_prefix("--") else {
                continue;
            };
            let name = flag.split('=').next().unwrap_or(flag);
            if !help.flags.contains(name) {
                return Err(format!("`drover {}` has no flag --{name}", path.join(" ")));
            }
        }
        Ok(())
    }
}

fn run_help(path: &[String]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(path)
        .arg("--help")
        .output()
        .expect("run drover --help");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "drover {path:?} --help failed: {text}"
    );
    text
}

/// clap's help: a `Commands:` section of `  name  about` lines, and option sections of
/// `  -s, --long <VALUE>  about` lines (descriptions never start a line with `-`).
pub fn parse_help(text: &str) -> CommandHelp {
    let mut help = CommandHelp::default();
    let mut in_commands = false;
    for line in text.lines() {
        if !line.starts_with(' ') {
            in_commands = line.trim_end() == "Commands:";
            continue;
        }
        let item = line.trim_start();
        if in_commands && line.starts_with("  ") && !line.starts_with("   ") {
            if let Some(name) = item.split_whitespace().next() {
                help.subcommands
                    .insert(name.trim_end_matches(',').to_string());
            }
        } else if item.starts_with('-') {
            let spec = item.split("  ").next().unwrap_or(item);
            for part in spec.split([',', ' ']) {
                if let Some(long) = part.strip_prefix("--") {
                    let name = long.split(['=', '<', '[']).next().unwrap_or(long);
                    help.flags.insert(name.to_string());
                }
            }
        }
    }
    help
}
