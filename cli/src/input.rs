//! Reading `--data JSON|@FILE` and hex input, and the JSON form of event data: `bytes`
//! fields are hex strings in the tool's JSON (the library's datum form has them as
//! arrays of numbers).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use serde_json::Value;

use crate::error::CliError;

/// Text given inline, or `@FILE` (`@-`: standard input). Returns the text and where it came from.
pub(crate) fn read_arg(arg: &str) -> Result<(Vec<u8>, String), CliError> {
    match arg.strip_prefix('@') {
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| CliError::bad_input(format!("cannot read standard input: {e}")))?;
            Ok((buf, "standard input".to_owned()))
        }
        Some(path) => {
            let bytes =
                std::fs::read(Path::new(path)).map_err(|e| CliError::bad_input(format!("cannot read {path}: {e}")))?;
            Ok((bytes, path.to_owned()))
        }
        None => Ok((arg.as_bytes().to_vec(), "--data".to_owned())),
    }
}

/// Parses JSON text, naming its origin, line and column on error. A key given twice in
/// one object is an error naming its path (serde_json would keep the last one silently).
pub(crate) fn parse_json(bytes: &[u8], origin: &str) -> Result<Value, CliError> {
    openedx_events::config::parse_json_unique_keys(bytes)
        .map_err(|e| CliError::bad_input(format!("{origin} is not valid JSON: {e}")))
}

/// Parses hex (whitespace, `0x` prefix and `:` separators allowed).
pub(crate) fn parse_hex(text: &str, origin: &str) -> Result<Vec<u8>, CliError> {
    let text = text.trim();
    let text = text.strip_prefix("0x").unwrap_or(text);
    let digits: String = text.chars().filter(|c| !c.is_whitespace() && *c != ':').collect();
    hex::decode(&digits).map_err(|e| CliError::bad_input(format!("{origin} is not valid hex: {e}")))
}

/// Which way [`convert_bytes`] converts `bytes` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BytesForm {
    /// Arrays of numbers (the library's datum form) to hex strings.
    ToHex,
    /// Hex strings to arrays of numbers; arrays are left as they are.
    FromHex,
}

/// Converts the `bytes` fields of event data between hex strings and arrays of numbers,
/// walking the event's Avro schema.
pub(crate) fn convert_bytes(schema: &Value, value: &mut Value, form: BytesForm) -> Result<(), CliError> {
    let mut names = HashMap::new();
    collect_names(schema, &mut names);
    let mut path = String::new();
    walk(schema, value, form, &names, &mut path)
}

fn collect_names<'a>(schema: &'a Value, names: &mut HashMap<&'a str, &'a Value>) {
    match schema {
        Value::Array(branches) => branches.iter().for_each(|b| collect_names(b, names)),
        Value::Object(o) => {
            if let (Some(Value::String(t)), Some(Value::String(name))) = (o.get("type"), o.get("name")) {
                if matches!(t.as_str(), "record" | "enum" | "fixed") {
                    names.insert(name.as_str(), schema);
                }
            }
            for key in ["type", "items", "values"] {
                if let Some(inner) = o.get(key) {
                    collect_names(inner, names);
                }
            }
            if let Some(Value::Array(fields)) = o.get("fields") {
                for f in fields {
                    if let Some(t) = f.get("type") {
                        collect_names(t, names);
                    }
                }
            }
        }
        _ => {}
    }
}

fn walk(
    schema: &Value,
    value: &mut Value,
    form: BytesForm,
    names: &HashMap<&str, &Value>,
    path: &mut String,
) -> Result<(), CliError> {
    match schema {
        Value::String(t) if t == "bytes" => convert_one(value, form, path),
        Value::String(t) => match names.get(t.as_str()) {
            Some(def) if !matches!(value, Value::Null) => walk(def, value, form, names, path),
            _ => Ok(()),
        },
        Value::Array(branches) => {
            if value.is_null() {
                return Ok(());
            }
            let non_null: Vec<&Value> = branches.iter().filter(|b| b.as_str() != Some("null")).collect();
            match non_null.as_slice() {
                [only] => walk(only, value, form, names, path),
                _ => Ok(()),
            }
        }
        Value::Object(o) => match o.get("type") {
            Some(Value::String(t)) if t == "record" => {
                let (Some(Value::Array(fields)), Value::Object(obj)) = (o.get("fields"), value) else {
                    return Ok(());
                };
                for f in fields {
                    let (Some(name), Some(ftype)) = (f.get("name").and_then(Value::as_str), f.get("type")) else {
                        continue;
                    };
                    if let Some(v) = obj.get_mut(name) {
                        let len = path.len();
                        if !path.is_empty() {
                            path.push('.');
                        }
                        path.push_str(name);
                        walk(ftype, v, form, names, path)?;
                        path.truncate(len);
                    }
                }
                Ok(())
            }
            Some(Value::String(t)) if t == "array" => {
                let (Some(items), Value::Array(list)) = (o.get("items"), value) else {
                    return Ok(());
                };
                for (i, v) in list.iter_mut().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    walk(items, v, form, names, path)?;
                    path.truncate(len);
                }
                Ok(())
            }
            Some(Value::String(t)) if t == "map" => {
                let (Some(values), Value::Object(map)) = (o.get("values"), value) else {
                    return Ok(());
                };
                for (k, v) in map.iter_mut() {
                    let len = path.len();
                    path.push_str(&format!("[{k:?}]"));
                    walk(values, v, form, names, path)?;
                    path.truncate(len);
                }
                Ok(())
            }
            Some(inner) => walk(inner, value, form, names, path),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

fn convert_one(value: &mut Value, form: BytesForm, path: &str) -> Result<(), CliError> {
    match (form, &*value) {
        (BytesForm::ToHex, Value::Array(items)) => {
            let bytes: Option<Vec<u8>> = items
                .iter()
                .map(|v| v.as_u64().and_then(|n| u8::try_from(n).ok()))
                .collect();
            if let Some(bytes) = bytes {
                *value = Value::String(hex::encode(bytes));
            }
            Ok(())
        }
        (BytesForm::FromHex, Value::String(text)) => {
            let bytes = hex::decode(text.trim())
                .map_err(|e| CliError::bad_input(format!("invalid data: at {path}: bytes must be hex: {e}")))?;
            *value = Value::Array(bytes.into_iter().map(Value::from).collect());
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Reads `--data JSON|@FILE` as data of `event`, with errors naming the bad value's path.
pub(crate) fn load_event_data(
    event: &'static openedx_events::event::EventDescriptor,
    arg: &str,
) -> Result<std::sync::Arc<dyn openedx_events::event::AnyEvent>, CliError> {
    let (bytes, origin) = read_arg(arg)?;
    let mut value = parse_json(&bytes, &origin)?;
    let ops = event.ops();
    convert_bytes(ops.schema().json(), &mut value, BytesForm::FromHex)?;
    ops.from_json(&value).map_err(|e| CliError::bad_input(e.to_string()))
}

/// Event data as the tool prints it: the datum form, `bytes` as hex.
pub(crate) fn data_json(data: &dyn openedx_events::event::AnyEvent) -> Value {
    let mut value = data.to_json();
    // Turning arrays into hex cannot fail.
    let _ = convert_bytes(data.ops().schema().json(), &mut value, BytesForm::ToHex);
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bytes_fields_become_hex_and_back() {
        let schema = json!({"name": "CloudEvent", "type": "record", "fields": [
            {"name": "blob", "type": "bytes"},
            {"name": "inner", "type": {"name": "Inner", "type": "record", "fields": [
                {"name": "data", "type": ["null", "bytes"], "default": null}]}},
            {"name": "more", "type": {"type": "array", "items": "Inner"}},
            {"name": "text", "type": "string"}]});
        let datum =
            json!({"blob": [1, 255], "inner": {"data": [16]}, "more": [{"data": null}, {"data": [0]}], "text": "x"});
        let mut v = datum.clone();
        convert_bytes(&schema, &mut v, BytesForm::ToHex).unwrap();
        assert_eq!(
            v,
            json!({"blob": "01ff", "inner": {"data": "10"}, "more": [{"data": null}, {"data": "00"}], "text": "x"})
        );
        convert_bytes(&schema, &mut v, BytesForm::FromHex).unwrap();
        assert_eq!(v, datum);
        let mut bad = json!({"blob": "zz", "inner": {"data": null}, "more": [], "text": "x"});
        let err = convert_bytes(&schema, &mut bad, BytesForm::FromHex).unwrap_err();
        assert!(err.to_string().contains("at blob"), "{err}");
        let mut bad = json!({"blob": "", "inner": {"data": null}, "more": [{"data": "0g"}], "text": "x"});
        let err = convert_bytes(&schema, &mut bad, BytesForm::FromHex).unwrap_err();
        assert!(err.to_string().contains("at more[0].data"), "{err}");
    }

    #[test]
    fn hex_input_forms() {
        assert_eq!(parse_hex(" 0x0a:0B\n ff ", "x").unwrap(), vec![10, 11, 255]);
        assert!(parse_hex("abc", "x")
            .unwrap_err()
            .to_string()
            .contains("x is not valid hex"));
    }
}
