//! A Confluent-API-compatible Schema Registry for tests: the endpoints the Rust and
//! Python clients use, in memory, over HTTP on 127.0.0.1, on its own thread.
//!
//! Schema ids are global and shared by identical schemas (compared after sorting keys),
//! as a real registry shares them. Requests are counted per endpoint and subject, so a
//! test can check that a client registers each (subject, schema) once.
//!
//! `RegistryHandle::from_env_or_start()` uses the registry named by
//! `EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL` when it is set, else starts this one.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

#[derive(Default)]
struct State {
    /// id - 1 -> schema text as first registered.
    schemas: Vec<String>,
    by_canon: HashMap<String, u32>,
    subjects: BTreeMap<String, Vec<u32>>,
    /// "POST /subjects/{s}/versions" etc. -> count.
    requests: HashMap<String, u64>,
    /// Subjects whose registration answers 503 for now.
    unavailable: HashSet<String>,
    /// Subjects whose schemas are refused as invalid (422).
    rejected: HashSet<String>,
    /// The status every `GET /schemas/ids/...` answers for now (a registry in trouble).
    read_status: Option<u16>,
}

fn canon(schema: &str) -> String {
    match serde_json::from_str::<Value>(schema) {
        Ok(v) => sorted(&v).to_string(),
        Err(_) => schema.to_owned(),
    }
}

fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<_> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), sorted(v))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        o => o.clone(),
    }
}

/// A running test registry (or a real one named by the environment).
pub struct RegistryHandle {
    url: String,
    state: Option<Arc<Mutex<State>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RegistryHandle {
    /// Starts the test registry on a free port of 127.0.0.1.
    pub fn start() -> Self {
        Self::start_on(0)
    }

    /// Starts the test registry on a given port of 127.0.0.1 (0: any free port).
    pub fn start_on(port: u16) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("test-schema-registry".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
                    addr_tx.send(listener.local_addr().unwrap()).unwrap();
                    tokio::pin!(stop_rx);
                    loop {
                        let (stream, _) = tokio::select! {
                            _ = &mut stop_rx => break,
                            a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                        };
                        let st = st.clone();
                        tokio::spawn(async move {
                            let service = hyper::service::service_fn(move |req| serve(st.clone(), req));
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await;
                        });
                    }
                });
            })
            .unwrap();
        let addr: SocketAddr = addr_rx.recv().unwrap();
        Self {
            url: format!("http://{addr}"),
            state: Some(state),
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// The registry of `EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL`, else a new test registry.
    pub fn from_env_or_start() -> Self {
        match std::env::var("EVENT_BUS_KAFKA_SCHEMA_REGISTRY_URL")
            .ok()
            .filter(|v| !v.is_empty())
        {
            Some(url) => Self {
                url,
                state: None,
                stop: None,
                thread: None,
            },
            None => Self::start(),
        }
    }

    /// Whether this is the in-process test registry (request counts are known).
    pub fn is_local(&self) -> bool {
        self.state.is_some()
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Requests counted for `what`, e.g. `"POST /subjects/t-string/versions"`.
    pub fn requests(&self, what: &str) -> u64 {
        let state = self.state.as_ref().expect("local registry");
        state.lock().unwrap().requests.get(what).copied().unwrap_or(0)
    }

    /// Subjects and their version ids (local registry only).
    pub fn subjects(&self) -> BTreeMap<String, Vec<u32>> {
        self.state
            .as_ref()
            .expect("local registry")
            .lock()
            .unwrap()
            .subjects
            .clone()
    }

    /// Schema text by id (local registry only).
    pub fn schema(&self, id: u32) -> Option<String> {
        let state = self.state.as_ref().expect("local registry");
        state.lock().unwrap().schemas.get(id as usize - 1).cloned()
    }

    /// Makes registering under `subject` answer 503 (a registry in trouble) until
    /// [`RegistryHandle::accept`] (local registry only).
    pub fn refuse(&self, subject: &str) {
        let state = self.state.as_ref().expect("local registry");
        state.lock().unwrap().unavailable.insert(subject.to_owned());
    }

    /// Makes registering under `subject` fail for good: 422, as a registry answers a
    /// schema it finds invalid or incompatible (local registry only).
    pub fn reject(&self, subject: &str) {
        let state = self.state.as_ref().expect("local registry");
        state.lock().unwrap().rejected.insert(subject.to_owned());
    }

    /// Makes every schema read by id (`GET /schemas/ids/...`) answer `status` (e.g. 503,
    /// 401), or answer normally again with `None` (local registry only).
    pub fn fail_reads(&self, status: Option<u16>) {
        let state = self.state.as_ref().expect("local registry");
        state.lock().unwrap().read_status = status;
    }

    /// Takes schemas under `subject` again after a [`RegistryHandle::reject`] or
    /// [`RegistryHandle::refuse`] (local registry only).
    pub fn allow(&self, subject: &str) {
        let state = self.state.as_ref().expect("local registry");
        let mut state = state.lock().unwrap();
        state.rejected.remove(subject);
        state.unavailable.remove(subject);
    }

    /// Stops answering 503 for `subject` (a [`RegistryHandle::reject`] stays).
    pub fn accept(&self, subject: &str) {
        let state = self.state.as_ref().expect("local registry");
        state.lock().unwrap().unavailable.remove(subject);
    }

    /// Stops the server (also done on drop).
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RegistryHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn not_found(code: u32, message: &str) -> Response<Full<Bytes>> {
    reply(StatusCode::NOT_FOUND, json!({"error_code": code, "message": message}))
}

async fn serve(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                json!({"error_code": 400, "message": "bad body"}),
            ))
        }
    };
    let parts: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(|p| percent_encoding::percent_decode_str(p).decode_utf8_lossy().into_owned())
        .collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let mut st = state.lock().unwrap();
    let key = format!("{method} /{}", parts.join("/"));
    *st.requests.entry(key).or_default() += 1;
    let schema_of = |body: &Bytes| -> Option<String> {
        let v: Value = serde_json::from_slice(body).ok()?;
        v.get("schema")?.as_str().map(str::to_owned)
    };
    let resp = match (&method, parts.as_slice()) {
        (&Method::GET, ["schemas", "ids", ..]) if st.read_status.is_some() => {
            let status = StatusCode::from_u16(st.read_status.unwrap_or(503)).unwrap();
            reply(
                status,
                json!({"error_code": status.as_u16(), "message": "registry in trouble"}),
            )
        }
        (&Method::POST, ["subjects", subject, "versions"]) if st.unavailable.contains(*subject) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error_code": 50003, "message": "Error while forwarding the request to the leader"}),
        ),
        (&Method::POST, ["subjects", subject, "versions"]) if st.rejected.contains(*subject) => reply(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"error_code": 42201, "message": "Invalid schema"}),
        ),
        (&Method::POST, ["subjects", subject, "versions"]) => match schema_of(&body) {
            None => reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error_code": 42201, "message": "Invalid schema"}),
            ),
            Some(schema) => {
                let c = canon(&schema);
                let id = match st.by_canon.get(&c) {
                    Some(id) => *id,
                    None => {
                        st.schemas.push(schema);
                        let id = st.schemas.len() as u32;
                        st.by_canon.insert(c, id);
                        id
                    }
                };
                let versions = st.subjects.entry((*subject).to_owned()).or_default();
                if !versions.contains(&id) {
                    versions.push(id);
                }
                reply(StatusCode::OK, json!({ "id": id }))
            }
        },
        (&Method::POST, ["subjects", subject]) => {
            let found = schema_of(&body).and_then(|s| st.by_canon.get(&canon(&s)).copied());
            match (st.subjects.get(*subject), found) {
                (None, _) => not_found(40401, "Subject not found"),
                (Some(v), Some(id)) if v.contains(&id) => {
                    let version = v.iter().position(|x| *x == id).unwrap() + 1;
                    let schema = st.schemas[id as usize - 1].clone();
                    reply(
                        StatusCode::OK,
                        json!({"subject": subject, "id": id, "version": version, "schema": schema}),
                    )
                }
                _ => not_found(40403, "Schema not found"),
            }
        }
        (&Method::GET, ["schemas", "ids", id]) => {
            match id.parse::<usize>().ok().and_then(|i| st.schemas.get(i.wrapping_sub(1))) {
                Some(s) => reply(StatusCode::OK, json!({ "schema": s })),
                None => not_found(40403, "Schema not found"),
            }
        }
        (&Method::GET, ["schemas", "ids", id, "subjects"]) => {
            let id: u32 = id.parse().unwrap_or(0);
            let subjects: Vec<&String> = st
                .subjects
                .iter()
                .filter(|(_, v)| v.contains(&id))
                .map(|(k, _)| k)
                .collect();
            if subjects.is_empty() {
                not_found(40403, "Schema not found")
            } else {
                reply(StatusCode::OK, json!(subjects))
            }
        }
        (&Method::GET, ["schemas", "ids", id, "versions"]) => {
            let id: u32 = id.parse().unwrap_or(0);
            let list: Vec<Value> = st
                .subjects
                .iter()
                .filter_map(|(k, v)| {
                    v.iter()
                        .position(|x| *x == id)
                        .map(|p| json!({"subject": k, "version": p + 1}))
                })
                .collect();
            reply(StatusCode::OK, json!(list))
        }
        (&Method::GET, ["subjects"]) => reply(StatusCode::OK, json!(st.subjects.keys().collect::<Vec<_>>())),
        (&Method::GET, ["subjects", subject, "versions"]) => match st.subjects.get(*subject) {
            Some(v) => reply(StatusCode::OK, json!((1..=v.len()).collect::<Vec<_>>())),
            None => not_found(40401, "Subject not found"),
        },
        (&Method::GET, ["subjects", subject, "versions", version]) => match st.subjects.get(*subject) {
            None => not_found(40401, "Subject not found"),
            Some(v) => {
                let n = if *version == "latest" {
                    v.len()
                } else {
                    version.parse().unwrap_or(0)
                };
                match v.get(n.wrapping_sub(1)) {
                    Some(id) => reply(
                        StatusCode::OK,
                        json!({"subject": subject, "id": id, "version": n, "schema": st.schemas[*id as usize - 1]}),
                    ),
                    None => not_found(40402, "Version not found"),
                }
            }
        },
        _ => not_found(404, "Not found"),
    };
    Ok(resp)
}
