//! An HTTP microservice whose state is replicated objects on the shared
//! log: how to embed the object runtime in a service.
//!
//! The service opens one runtime and its objects once, at start, and
//! shares them with every request handler through an `Arc` (handles are
//! cheap to clone and share one view per object). Any number of copies of
//! the service, on any machines, can serve the same objects: a write
//! acknowledged by one is seen by the next read of every other, because
//! reads are linearizable.
//!
//! | request | object | answer |
//! |---|---|---|
//! | `GET /kv` | map | every key and value, as JSON |
//! | `GET /kv/{key}` | map | the value (text), or 404 |
//! | `PUT /kv/{key}` (body: the value) | map | `{"address": A}`, where the write landed in the log |
//! | `DELETE /kv/{key}` | map, in a transaction | the removed value, or 404 if there was none |
//! | `POST /counter/{name}/add` (body: `{"delta": D}`) | counter | `{"value": V}`, the value right after this add, in log order |
//! | `GET /counter/{name}` | counter | `{"value": V}` |
//!
//! ```sh
//! cargo run --release --example service                    # serves on 127.0.0.1:8080 until Ctrl-C, prints curl commands
//! cargo run --release --example service -- --self-test     # binds a free port, sends itself requests, checks the answers
//! cargo run --release --example service -- --cluster /tmp/corfu-demo/cluster.toml --listen 127.0.0.1:8081
//! cargo run --release --example service -- --help
//! ```
//!
//! With `--self-test` it exits 0 if every answer was right (a second
//! runtime, on a connection of its own, checks the objects too), 1 if not.

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use corfu::embedded::ClusterOrEmbedded;
use corfu::objects::{ReplicatedCounter, ReplicatedMap};
use corfu::smr::{Error, Runtime};

/// The largest request body (a value, or a counter increment).
const BODY_BYTES_MAX: usize = 64 * 1024;

/// The longest key or counter name.
const NAME_BYTES_MAX: usize = 256;

/// How long the self-test waits for one answer.
const SELF_TEST_REQUEST_TIMEOUT_MS: u64 = 10_000;

/// The largest answer the self-test reads.
const SELF_TEST_RESPONSE_BYTES_MAX: u64 = 1024 * 1024;

/// Serves a key-value map and counters, replicated on the shared log,
/// over HTTP.
#[derive(Parser, Debug)]
#[command(name = "service")]
struct Args {
    /// Client config (cluster.toml) of a running cluster; without it a
    /// 3-node cluster is started inside this process, in a temporary
    /// directory.
    #[arg(long, value_name = "FILE")]
    cluster: Option<PathBuf>,
    /// Where to serve HTTP (ignored with --self-test, which takes a free
    /// port on 127.0.0.1).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Prefix of the objects' names: services with the same namespace on
    /// the same cluster share their objects. With --self-test, a random
    /// one if absent, so every test starts afresh.
    #[arg(long)]
    namespace: Option<String>,
    /// Send this service a few requests, check the answers, print them and
    /// exit (0 if all were right, 1 if not).
    #[arg(long)]
    self_test: bool,
}

/// What every handler shares: the runtime and the objects, opened once.
struct App {
    runtime: Runtime,
    namespace: String,
    kv: ReplicatedMap<String, String>,
}

impl App {
    fn open(runtime: Runtime, namespace: &str) -> Result<App, Error> {
        Ok(App {
            kv: runtime.open(&kv_name(namespace))?,
            runtime,
            namespace: namespace.to_string(),
        })
    }

    /// The counter `name`. Counters are made on first use, so they are
    /// opened per request: the runtime keeps one view per object, and a
    /// second open is a lookup that shares it.
    fn counter(&self, name: &str) -> Result<ReplicatedCounter, Error> {
        self.runtime.open(&counter_name(&self.namespace, name))
    }
}

fn kv_name(namespace: &str) -> String {
    format!("{namespace}/kv")
}

fn counter_name(namespace: &str, name: &str) -> String {
    format!("{namespace}/counter/{name}")
}

/// A failed request: the status and a one-line reason.
struct Failure(StatusCode, String);

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        // The log being unreachable is worth a retry; the rest is a bug.
        let status = match e {
            Error::Log { .. } | Error::Aborted { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failure(status, e.to_string())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

fn check_name(name: &str) -> Result<(), Failure> {
    if name.len() > NAME_BYTES_MAX {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            format!("a name is at most {NAME_BYTES_MAX} bytes"),
        ));
    }
    Ok(())
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Written {
    /// The log address of the write.
    address: u64,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Add {
    delta: i64,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Value {
    value: i64,
}

type Shared = State<Arc<App>>;

async fn list_kv(State(app): Shared) -> Result<Json<BTreeMap<String, String>>, Failure> {
    Ok(Json(app.kv.snapshot().await?.into_iter().collect()))
}

async fn get_kv(State(app): Shared, Path(key): Path<String>) -> Result<String, Failure> {
    match app.kv.get(&key).await? {
        Some(value) => Ok(value),
        None => Err(Failure(StatusCode::NOT_FOUND, format!("no key {key:?}"))),
    }
}

async fn put_kv(
    State(app): Shared,
    Path(key): Path<String>,
    value: String,
) -> Result<Json<Written>, Failure> {
    check_name(&key)?;
    let address = app.kv.insert(key, value).await?;
    Ok(Json(Written { address }))
}

/// Removes the key only if it is there, and says what it removed: a read
/// and a write in one transaction, so two concurrent deletes of one key
/// cannot both report the value.
async fn delete_kv(State(app): Shared, Path(key): Path<String>) -> Result<String, Failure> {
    let (kv, key_ref) = (&app.kv, &key);
    let removed = app
        .runtime
        .transaction(|tx| async move {
            let value = kv.tx_get(&tx, key_ref).await?;
            if value.is_some() {
                kv.tx_remove(&tx, key_ref.clone())?;
            }
            Ok(value)
        })
        .await?;
    removed.ok_or_else(|| Failure(StatusCode::NOT_FOUND, format!("no key {key:?}")))
}

async fn add_counter(
    State(app): Shared,
    Path(name): Path<String>,
    Json(add): Json<Add>,
) -> Result<Json<Value>, Failure> {
    check_name(&name)?;
    let value = app.counter(&name)?.add_and_get(add.delta).await?;
    Ok(Json(Value { value }))
}

async fn get_counter(State(app): Shared, Path(name): Path<String>) -> Result<Json<Value>, Failure> {
    let value = app.counter(&name)?.get().await?;
    Ok(Json(Value { value }))
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/kv", get(list_kv))
        .route("/kv/{key}", get(get_kv).put(put_kv).delete(delete_kv))
        .route("/counter/{name}", get(get_counter))
        .route("/counter/{name}/add", post(add_counter))
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(app)
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`, so
/// the answer ends where the stream does); returns the status and body.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(&str, &str)>,
) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        let payload = match body {
            Some((content_type, payload)) => {
                head.push_str(&format!(
                    "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                    payload.len()
                ));
                payload
            }
            None => "",
        };
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(payload.as_bytes()).await?;
        let mut answer = Vec::new();
        stream
            .take(SELF_TEST_RESPONSE_BYTES_MAX)
            .read_to_end(&mut answer)
            .await?;
        anyhow::Ok(answer)
    };
    let answer = tokio::time::timeout(
        Duration::from_millis(SELF_TEST_REQUEST_TIMEOUT_MS),
        exchange,
    )
    .await
    .with_context(|| format!("{method} {path}: no answer"))??;
    let answer = String::from_utf8(answer).context("the answer is not UTF-8")?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .context("the answer has no end of headers")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// The body of a chunked answer.
fn dechunk(mut rest: &str) -> anyhow::Result<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").context("a chunk without a size")?;
        let size = usize::from_str_radix(size.trim(), 16).context("a bad chunk size")?;
        if size == 0 {
            return Ok(body);
        }
        let chunk = after.get(..size).context("a short chunk")?;
        body.push_str(chunk);
        rest = after.get(size + 2..).context("a chunk without its end")?;
    }
}

/// The self-test's record of what it saw and what was wrong.
#[derive(Default)]
struct Checks {
    failed: Vec<String>,
}

impl Checks {
    /// Sends one request, prints it with its answer, and checks the status
    /// (and the body, if `body_expected` is given).
    async fn call(
        &mut self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        body: Option<(&str, &str)>,
        status_expected: u16,
        body_expected: Option<&str>,
    ) -> anyhow::Result<String> {
        let (status, answer) = request(addr, method, path, body).await?;
        let sent = body.map(|(_, b)| format!(" {b}")).unwrap_or_default();
        println!("{method} {path}{sent} -> {status} {}", answer.trim_end());
        if status != status_expected {
            self.failed.push(format!(
                "{method} {path}: status {status}, expected {status_expected}"
            ));
        }
        if let Some(expected) = body_expected {
            if answer.trim_end() != expected {
                self.failed.push(format!(
                    "{method} {path}: answered {answer:?}, expected {expected:?}"
                ));
            }
        }
        Ok(answer)
    }

    fn expect(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.failed.push(what());
        }
    }
}

const JSON: &str = "application/json";
const TEXT: &str = "text/plain";

/// Sends the service at `addr` a few requests and checks the answers, then
/// checks the objects from `other`, a runtime of its own.
async fn self_test(addr: SocketAddr, other: &Runtime, namespace: &str) -> anyhow::Result<Checks> {
    let mut c = Checks::default();
    c.call(addr, "GET", "/kv/greeting", None, 404, None).await?;
    let put = c
        .call(
            addr,
            "PUT",
            "/kv/greeting",
            Some((TEXT, "hello")),
            200,
            None,
        )
        .await?;
    c.expect(serde_json::from_str::<Written>(&put).is_ok(), || {
        format!("PUT answered {put:?}, expected {{\"address\": A}}")
    });
    c.call(addr, "GET", "/kv/greeting", None, 200, Some("hello"))
        .await?;
    c.call(addr, "PUT", "/kv/color", Some((TEXT, "blue")), 200, None)
        .await?;
    c.call(
        addr,
        "GET",
        "/kv",
        None,
        200,
        Some(r#"{"color":"blue","greeting":"hello"}"#),
    )
    .await?;
    c.call(addr, "DELETE", "/kv/greeting", None, 200, Some("hello"))
        .await?;
    c.call(addr, "DELETE", "/kv/greeting", None, 404, None)
        .await?;

    // Concurrent adds: each answer is the value right after that add in
    // log order, so they are distinct and end at the sum.
    const ADDS: i64 = 5;
    let adds = (0..ADDS).map(|_| {
        request(
            addr,
            "POST",
            "/counter/visits/add",
            Some((JSON, r#"{"delta":1}"#)),
        )
    });
    let mut seen = Vec::new();
    for answer in futures_util::future::join_all(adds).await {
        let (status, body) = answer?;
        println!(
            "POST /counter/visits/add {{\"delta\":1}} -> {status} {}",
            body.trim_end()
        );
        c.expect(status == 200, || format!("an add answered {status}"));
        if let Ok(Value { value }) = serde_json::from_str(&body) {
            seen.push(value);
        }
    }
    seen.sort_unstable();
    c.expect(seen == (1..=ADDS).collect::<Vec<_>>(), || {
        format!("{ADDS} concurrent adds of 1 answered {seen:?}, expected 1 to {ADDS} once each")
    });
    c.call(
        addr,
        "GET",
        "/counter/visits",
        None,
        200,
        Some(&format!(r#"{{"value":{ADDS}}}"#)),
    )
    .await?;
    c.call(
        addr,
        "POST",
        "/counter/visits/add",
        Some((JSON, "not json")),
        400,
        None,
    )
    .await?;

    // Another runtime (another connection, as another copy of the service
    // would have) sees what the service wrote.
    let kv: ReplicatedMap<String, String> = other.open(&kv_name(namespace))?;
    let visits: ReplicatedCounter = other.open(&counter_name(namespace, "visits"))?;
    let entries: Vec<(String, String)> = kv.snapshot().await?.into_iter().collect();
    let count = visits.get().await?;
    println!("another runtime sees: kv {entries:?}, counter visits = {count}");
    c.expect(entries == [("color".into(), "blue".into())], || {
        format!("another runtime sees kv {entries:?}")
    });
    c.expect(count == ADDS, || {
        format!("another runtime sees visits = {count}")
    });
    Ok(c)
}

fn print_curl_commands(addr: SocketAddr) {
    println!("try:");
    println!("  curl -X PUT http://{addr}/kv/greeting -d hello");
    println!("  curl http://{addr}/kv/greeting");
    println!("  curl http://{addr}/kv");
    println!("  curl -X DELETE http://{addr}/kv/greeting");
    println!(
        "  curl -X POST http://{addr}/counter/visits/add -H 'content-type: application/json' -d '{{\"delta\":1}}'"
    );
    println!("  curl http://{addr}/counter/visits");
    println!("Ctrl-C stops the service.");
}

async fn run(args: &Args, log: &ClusterOrEmbedded) -> anyhow::Result<bool> {
    let (runtime, client) = log.runtime().await?;
    let namespace = match (&args.namespace, args.self_test) {
        (Some(ns), _) => ns.clone(),
        (None, true) => format!("service-{:08x}", rand::random::<u32>()),
        (None, false) => "service".to_string(),
    };
    let app = Arc::new(App::open(runtime, &namespace)?);
    let listen = if args.self_test {
        SocketAddr::from(([127, 0, 0, 1], 0))
    } else {
        args.listen
    };
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    println!("serving http://{addr}, objects {namespace}/kv and {namespace}/counter/*");

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(listener, router(app))
            .with_graceful_shutdown(async {
                // A dropped sender stops the service too.
                let _ = stopped.await;
            })
            .into_future(),
    );

    let passed = if args.self_test {
        let (other, other_client) = log.runtime().await?;
        let checks = self_test(addr, &other, &namespace).await;
        other_client.close();
        let checks = checks?;
        for f in &checks.failed {
            eprintln!("self-test failed: {f}");
        }
        checks.failed.is_empty()
    } else {
        print_curl_commands(addr);
        tokio::signal::ctrl_c().await?;
        println!("stopping");
        true
    };
    let _ = stop.send(());
    server.await.context("the server panicked")??;
    client.close();
    Ok(passed)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    let log = ClusterOrEmbedded::open(args.cluster.as_deref()).await?;
    let outcome = run(&args, &log).await;
    log.shutdown().await;
    if !outcome? {
        std::process::exit(1);
    }
    if args.self_test {
        println!("self-test passed");
    }
    Ok(())
}
