//! Reading `deploy/`: its YAML documents, and the `drover` command lines in the Dockerfile,
//! the compose file and the Kubernetes manifests.

use serde::Deserialize;
use serde_yaml::Value;
use std::path::{Path, PathBuf};

/// The image every drover service and workload runs.
pub const IMAGE: &str = "drover:local";

pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

pub fn read(relative: &str) -> String {
    let path = deploy_dir().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `.yml`/`.yaml` file under `deploy/`, recursively.
pub fn yaml_files() -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![deploy_dir()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// A file's YAML documents (`---`-separated), with merge keys (`<<: *anchor`) applied as
/// docker compose applies them; empty documents are left out.
pub fn documents(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let mut value = Value::deserialize(document).map_err(|e| e.to_string())?;
        value.apply_merge().map_err(|e| e.to_string())?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

pub fn k8s_documents() -> Vec<Value> {
    yaml_files()
        .iter()
        .filter(|path| path.parent().is_some_and(|dir| dir.ends_with("k8s")))
        .flat_map(|path| documents(path).unwrap())
        .collect()
}

pub fn k8s_kind<'a>(documents: &'a [Value], kind: &str, name: &str) -> &'a Value {
    documents
        .iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/k8s"))
}

pub fn compose() -> Value {
    let mut documents = documents(&deploy_dir().join("compose.yaml")).unwrap();
    assert_eq!(documents.len(), 1, "compose.yaml is one document");
    documents.remove(0)
}

pub fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("not a list: {value:?}"))
        .iter()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => panic!("not a string: {other:?} (quote numbers in command lines)"),
        })
        .collect()
}

/// A `drover` command line (the words after `drover`) and where it was found.
pub struct Invocation {
    pub source: String,
    pub args: Vec<String>,
}

/// The Dockerfile's default command (`CMD`), after checking that `ENTRYPOINT` runs drover.
pub fn dockerfile_invocations() -> Vec<Invocation> {
    let text = read("Dockerfile");
    let json_line = |instruction: &str| -> Vec<String> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(instruction))
            .unwrap_or_else(|| panic!("the Dockerfile has no {instruction}"));
        serde_json::from_str(line.trim()).expect("exec form: a JSON list")
    };
    let entrypoint = json_line("ENTRYPOINT ");
    assert_eq!(
        entrypoint.last().map(String::as_str),
        Some("/usr/local/bin/drover"),
        "{entrypoint:?}"
    );
    vec![Invocation {
        source: "Dockerfile CMD".into(),
        args: json_line("CMD "),
    }]
}

/// Every compose service that runs the drover image: its `command`.
pub fn compose_invocations() -> Vec<Invocation> {
    let compose = compose();
    let services = compose["services"].as_mapping().expect("services");
    services
        .iter()
        .filter(|(_, service)| service["image"] == IMAGE)
        .map(|(name, service)| Invocation {
            source: format!("compose.yaml service {}", name.as_str().unwrap_or("?")),
            args: strings(&service["command"]),
        })
        .collect()
}

/// The pod spec of a Kubernetes workload, if the document is one.
pub fn pod_spec(document: &Value) -> Option<&Value> {
    let kinds = ["Deployment", "DaemonSet", "StatefulSet", "Job"];
    let kind = document["kind"].as_str()?;
    kinds
        .contains(&kind)
        .then(|| &document["spec"]["template"]["spec"])
}

/// Every Kubernetes container that runs the drover image: its `command` and `args`.
pub fn k8s_invocations() -> Vec<Invocation> {
    let mut found = Vec::new();
    for document in k8s_documents() {
        let Some(spec) = pod_spec(&document) else {
            continue;
        };
        for container in spec["containers"].as_sequence().expect("containers") {
            if container["image"] != IMAGE {
                continue;
            }
            assert!(
                container["command"].is_null(),
                "drover containers keep the image's entrypoint and set args"
            );
            found.push(Invocation {
                source: format!(
                    "k8s {} {} container {}",
                    document["kind"].as_str().unwrap_or("?"),
                    document["metadata"]["name"].as_str().unwrap_or("?"),
                    container["name"].as_str().unwrap_or("?")
                ),
                args: strings(&container["args"]),
            });
        }
    }
    found
}
