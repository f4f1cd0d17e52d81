//! `check-config`: validate a producer config against the events this binary knows,
//! before it ships (Python finds a bad `event_key_field` only when an event is sent).

use std::path::{Path, PathBuf};

use clap::Args;
use openedx_events::config::{full_topic, ConfigError, ProducerConfig, Route};
use openedx_events::Settings;
use serde_json::{json, Value};

use crate::error::CliError;
use crate::output::{print_json_pretty, write_stdout};

/// Arguments of `check-config`.
#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The producer config: a `.json` or `.toml` file, in the ADR 12 (list) or ADR 14 (mapping) shape.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Merge this config over FILE (as Python's merge_producer_configs does), print the
    /// merged config, and check it.
    #[arg(long, value_name = "FILE")]
    merge: Option<PathBuf>,
    /// Print one JSON object (ok, problems, routes, merged) instead of text.
    #[arg(long)]
    json: bool,
}

/// One problem, with the event type, topic and field it concerns when known.
struct Problem {
    file: Option<String>,
    error: ConfigError,
}

impl Problem {
    fn to_json(&self) -> Value {
        let (event_type, topic, field) = locate(&self.error);
        json!({
            "file": self.file,
            "event_type": event_type,
            "topic": topic,
            "field": field,
            "message": self.error.to_string(),
        })
    }
}

/// The event type, topic and field a problem concerns.
fn locate(e: &ConfigError) -> (Option<&str>, Option<&str>, Option<&str>) {
    match e {
        ConfigError::UnknownEventType { event_type, .. } => (Some(event_type), None, None),
        ConfigError::MissingKey { event_type, topic, key } => (Some(event_type), Some(topic), Some(key)),
        ConfigError::WrongType {
            event_type, topic, key, ..
        }
        | ConfigError::UnknownKey { event_type, topic, key } => (Some(event_type), Some(topic), Some(key)),
        ConfigError::DuplicateTopic { event_type, topic } | ConfigError::IllegalTopic { event_type, topic, .. } => {
            (Some(event_type), Some(topic), None)
        }
        ConfigError::BadKeyPath { event_type, topic, .. } => (Some(event_type), Some(topic), Some("event_key_field")),
        _ => (None, None, None),
    }
}

/// Reads a config file, collecting its problems. When parts of it are malformed, the
/// well-formed entries are still returned, so that their problems are found too.
fn read(path: &Path, problems: &mut Vec<Problem>, unreadable: &mut bool) -> Option<ProducerConfig> {
    let errors = match ProducerConfig::from_file(path) {
        Ok(c) => return Some(c),
        Err(errors) => errors.0,
    };
    let file = path.display().to_string();
    let mut salvageable = true;
    for error in errors {
        *unreadable |= matches!(error, ConfigError::File { .. });
        salvageable &= !matches!(error, ConfigError::File { .. } | ConfigError::Malformed { .. });
        problems.push(Problem {
            file: Some(file.clone()),
            error,
        });
    }
    if !salvageable {
        return None;
    }
    let value = parse_file(path)?;
    Some(salvage(&value))
}

/// The file as JSON (TOML converted as the library converts it).
fn parse_file(path: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => serde_json::to_value(toml::from_str::<toml::Value>(&text).ok()?).ok(),
        _ => serde_json::from_str(&text).ok(),
    }
}

/// The well-formed (event type, topic) entries of a config whose other entries are not.
fn salvage(value: &Value) -> ProducerConfig {
    let mut config = ProducerConfig::new();
    let Value::Object(top) = value else { return config };
    for (event_type, entry) in top {
        let one = |inner: Value| ProducerConfig::from_value(&json!({ event_type: inner })).ok();
        if let Some(c) = one(entry.clone()) {
            config = config.merged(&c);
            continue;
        }
        let parts: Vec<Value> = match entry {
            Value::Array(items) => items.iter().map(|i| Value::Array(vec![i.clone()])).collect(),
            Value::Object(topics) => topics.iter().map(|(t, v)| json!({ t: v })).collect(),
            _ => Vec::new(),
        };
        for part in parts {
            if let Some(c) = one(part) {
                config = config.merged(&c);
            }
        }
    }
    config
}

pub(crate) fn run(args: CheckConfigArgs) -> Result<(), CliError> {
    let mut problems = Vec::new();
    let mut unreadable = false;
    let base = read(&args.file, &mut problems, &mut unreadable);
    let overrides = match &args.merge {
        Some(path) => read(path, &mut problems, &mut unreadable),
        None => None,
    };
    if unreadable {
        let messages: Vec<String> = problems.iter().map(|p| p.error.to_string()).collect();
        return Err(CliError::bad_input(messages.join("; ")));
    }
    let merged = match (base, overrides) {
        (Some(b), Some(o)) => Some(b.merged(&o)),
        (Some(b), None) => Some(b),
        (None, Some(o)) => Some(o),
        (None, None) => None,
    };
    let mut routes: Vec<Route> = Vec::new();
    if let Some(config) = &merged {
        match config.validate() {
            Ok(r) => routes = r,
            Err(errors) => problems.extend(errors.0.into_iter().map(|error| Problem { file: None, error })),
        }
    }
    let settings = Settings::try_from_env().map_err(|e| CliError::bad_input(e.to_string()))?;
    let prefix = settings.topic_prefix().map(str::to_owned);
    if args.json {
        let routes: Vec<Value> = routes
            .iter()
            .map(|r| {
                json!({
                    "event_type": r.descriptor.event_type,
                    "topic": r.topic,
                    "full_topic": full_topic(prefix.as_deref(), &r.topic),
                    "event_key_field": r.event_key_field,
                    "key_type": r.key.avro_type,
                    "enabled": r.enabled,
                })
            })
            .collect();
        print_json_pretty(&json!({
            "ok": problems.is_empty(),
            "problems": problems.iter().map(Problem::to_json).collect::<Vec<_>>(),
            "routes": routes,
            "merged": if args.merge.is_some() { merged.as_ref().map(ProducerConfig::to_json) } else { None },
        }))?;
    } else {
        let mut out = String::new();
        if let (Some(config), Some(_)) = (&merged, &args.merge) {
            out.push_str("merged config:\n");
            out.push_str(&serde_json::to_string_pretty(&config.to_json()).unwrap_or_default());
            out.push('\n');
        }
        for p in &problems {
            match &p.file {
                Some(f) => out.push_str(&format!("problem: {f}: {}\n", p.error)),
                None => out.push_str(&format!("problem: {}\n", p.error)),
            }
        }
        if problems.is_empty() {
            let enabled = routes.iter().filter(|r| r.enabled).count();
            out.push_str(&format!("ok: {} route(s), {enabled} enabled\n", routes.len()));
            for r in &routes {
                let full = full_topic(prefix.as_deref(), &r.topic);
                out.push_str(&format!(
                    "  {} -> {}{} key {} ({}){}\n",
                    r.descriptor.event_type,
                    r.topic,
                    if full != r.topic {
                        format!(" [{full}]")
                    } else {
                        String::new()
                    },
                    r.event_key_field,
                    r.key.avro_type,
                    if r.enabled { "" } else { " disabled" }
                ));
            }
        }
        write_stdout(&out)?;
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CliError::problems(format!("{} problem(s) found", problems.len())))
    }
}
