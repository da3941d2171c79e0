//! `meshql`: query a data mesh, browse its catalog, check its contracts.

mod output;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use meshql::{Mesh, Principal};

use crate::output::OutputFormat;

// mimalloc instead of the system allocator: DataFusion and the contract loader allocate a lot of
// short-lived buffers, and glibc malloc showed up as a fifth of the profile of opening a mesh.
// Counted per query (meshql::memory), so that a query is held to the memory it really holds.
#[global_allocator]
static GLOBAL: meshql::memory::Counting<mimalloc::MiMalloc> = meshql::memory::Counting::new(mimalloc::MiMalloc);

#[derive(Parser)]
#[command(
    name = "meshql",
    version,
    about = "Federated SQL over a data mesh of contracted data products"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct MeshArg {
    /// The mesh directory (the one holding mesh.yaml).
    #[arg(long, short = 'm', env = "MESHQL_MESH", default_value = ".")]
    mesh: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run SQL against the mesh.
    Query(QueryArgs),
    /// Browse the mesh's domains and products.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Validate every contract, assess every product against the governance standards, compare
    /// its storage with its contract and run its quality checks; exits 1 if anything fails
    /// (unavailable, non-compliant, or a quality check of severity error).
    Check(CheckArgs),
    /// Serve the mesh over Arrow Flight SQL (JDBC, ADBC, any Flight SQL client).
    Serve(ServeArgs),
    /// Make credentials for the server configuration.
    #[command(subcommand)]
    Auth(AuthCommand),
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    mesh: MeshArg,
    /// Only this domain.
    #[arg(long)]
    domain: Option<String>,
    /// Only this product, `<domain>.<product>`.
    #[arg(long)]
    product: Option<String>,
    /// Report format: human, json, or junit (JUnit XML for CI).
    #[arg(long, short = 'f', value_enum, default_value_t = report::ReportFormat::Human)]
    format: report::ReportFormat,
    /// Write the report to this file instead of standard output.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Skip the quality checks (documents, standards and storage only).
    #[arg(long)]
    no_quality: bool,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    mesh: MeshArg,
    /// Server configuration (YAML: listen, tls, auth, limits, results); see testdata/server.yaml.
    #[arg(long, short = 'c', env = "MESHQL_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (overrides the configuration); port 0 picks a free port.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// PEM certificate chain: serve TLS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA bundle: require client certificates it signed (mutual TLS).
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Let callers without credentials in, as principal `anonymous`.
    #[arg(long)]
    allow_anonymous: bool,
    /// Serve with the demo signing key published in meshql's repository on an address other
    /// than loopback (refused otherwise: anyone can mint tokens with it).
    #[arg(long)]
    allow_demo_key: bool,
}

#[derive(Subcommand)]
enum AuthCommand {
    /// Print the argon2 hash of a password read from standard input, for `passwordHash`.
    HashPassword,
    /// Print a new service token and the `tokenHash` to configure for it.
    NewServiceToken,
}

#[derive(Args)]
struct QueryArgs {
    #[command(flatten)]
    mesh: MeshArg,
    /// The SQL to run; `-` reads it from standard input.
    sql: String,
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
    /// Write the result to this file instead of standard output (required for arrow and parquet).
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Run as this principal.
    #[arg(long, default_value = "cli")]
    user: String,
    /// A group of the principal (repeatable).
    #[arg(long = "group")]
    groups: Vec<String>,
    /// An attribute of the principal, KEY=VALUE (repeatable).
    #[arg(long = "attr", value_parser = parse_attribute)]
    attributes: Vec<(String, String)>,
    /// Stop the query after this many seconds, output included (0: no limit).
    #[arg(long, default_value_t = 900, value_name = "SECONDS")]
    timeout: u64,
    /// Memory the query's operators may hold (sorts and joins spill, then the query fails
    /// beyond it): bytes, or with a unit (`512MiB`, `2GiB`).
    #[arg(long, default_value = "4GiB", value_parser = parse_memory)]
    memory: usize,
}

fn parse_memory(s: &str) -> std::result::Result<usize, String> {
    meshql_flight::config::parse_size(s).ok_or_else(|| format!("not a size: {s:?} (e.g. 512MiB, 2GiB)"))
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Domains and products with owner, status, format and location.
    List(MeshArg),
    /// One product's contract summary and schema.
    Show {
        #[command(flatten)]
        mesh: MeshArg,
        /// `<domain>.<product>` (as in `mesh.<domain>.<product>`).
        product: String,
    },
    /// Find products by text (names, descriptions, columns), domain, owner, tag, classification.
    Search(SearchArgs),
}

#[derive(Args)]
struct SearchArgs {
    #[command(flatten)]
    mesh: MeshArg,
    /// Words to look for (all must match, case-insensitive).
    text: Vec<String>,
    #[arg(long)]
    domain: Option<String>,
    #[arg(long)]
    owner: Option<String>,
    /// A product or column tag.
    #[arg(long)]
    tag: Option<String>,
    /// A column classification (e.g. pii).
    #[arg(long)]
    classification: Option<String>,
}

fn parse_attribute(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A server logs what it does, its dependencies' lines included (they go to its log). One-shot
    // commands print only meshql's own errors: a dependency's errors are the causes of meshql's,
    // which reach the user with them; delta kernel's lines about a version that does not exist,
    // printed before meshql's own message, only confused (`MESHQL_LOG=debug` shows them).
    const OURS: [&str; 5] = [
        "meshql",
        "meshql_catalog",
        "meshql_contract",
        "meshql_flight",
        "meshql_policy",
    ];
    let default_filter = if matches!(cli.command, Command::Serve(_)) {
        "info".to_string()
    } else {
        format!("off,{}", OURS.map(|t| format!("{t}=error")).join(","))
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MESHQL_LOG").unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Queries are planned and run on these workers: with a stack deep enough for every statement
    // meshql accepts (`meshql::limits`), not on the main thread's.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(meshql::limits::QUERY_THREAD_STACK)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let command = std::thread::Builder::new()
        .name("meshql".into())
        .stack_size(meshql::limits::QUERY_THREAD_STACK)
        .spawn(move || runtime.block_on(run(cli)));
    match command.map(|t| t.join()) {
        Ok(Ok(Ok(code))) => code,
        Ok(Ok(Err(e))) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
        Ok(Err(_)) => ExitCode::FAILURE, // panicked: the panic message is on stderr already
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            ExitCode::from(2)
        }
    }
}

/// An error as the user reads it: a query's error is complete on its own (its causes are in its
/// message, and what the principal may not see was taken out of it); other errors with the
/// context they gathered.
fn describe(e: &anyhow::Error) -> String {
    match e.downcast_ref::<meshql::Error>() {
        Some(query) if e.to_string() == query.to_string() => query.to_string(),
        _ => format!("{e:#}"),
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Query(args) => query(args).await,
        Command::Catalog(CatalogCommand::List(m)) => catalog_list(&open(&m)?),
        Command::Catalog(CatalogCommand::Show { mesh, product }) => catalog_show(&open(&mesh)?, &product).await,
        Command::Catalog(CatalogCommand::Search(args)) => catalog_search(&args),
        Command::Check(args) => check(args).await,
        Command::Serve(args) => serve(args).await,
        Command::Auth(AuthCommand::HashPassword) => {
            let password = std::io::read_to_string(std::io::stdin()).context("reading the password")?;
            let password = password.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                bail!("empty password");
            }
            println!("{}", meshql_flight::auth::hash_password(password)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Auth(AuthCommand::NewServiceToken) => {
            let (token, hash) = meshql_flight::auth::new_service_token();
            println!("token:     {token}\ntokenHash: {hash}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(args: ServeArgs) -> Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => meshql_flight::ServerConfig::load(path)?,
        None => meshql_flight::ServerConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.tls = Some(meshql_flight::config::TlsConfig {
            cert,
            key,
            client_ca: args.tls_client_ca,
        });
    }
    if args.allow_anonymous {
        config.auth.anonymous.enabled = true;
    }
    if args.allow_demo_key {
        config.auth.allow_demo_key = true;
    }
    let mesh = open(&args.mesh)?;
    let settings = mesh.definition().settings.clone();
    // Edited contracts, descriptors and policies take effect without a restart.
    let _watch =
        (settings.reload_seconds > 0).then(|| mesh.watch(std::time::Duration::from_secs(settings.reload_seconds)));
    let _quality = (settings.quality.schedule_seconds > 0)
        .then(|| mesh.schedule_quality_checks(std::time::Duration::from_secs(settings.quality.schedule_seconds)));
    let server = meshql_flight::serve(mesh, config).await?;
    // Tests and scripts read the bound address (port 0 = any free port) from this line.
    println!("meshql listening on {}", server.addr());
    server.shutdown_on(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn open(m: &MeshArg) -> Result<Mesh> {
    Mesh::open(&m.mesh).with_context(|| format!("opening mesh {}", m.mesh.display()))
}

async fn query(args: QueryArgs) -> Result<ExitCode> {
    let sql = if args.sql == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading SQL from standard input")?
    } else {
        args.sql.clone()
    };
    if args.output.is_none() && args.format.is_binary() {
        bail!("--format {} writes a file: give --output FILE", args.format.name());
    }
    let mesh = open(&args.mesh)?;
    let mut principal = Principal::new(&args.user).with_groups(args.groups.iter().cloned());
    for (k, v) in &args.attributes {
        principal = principal.with_attribute(k, v);
    }
    let session = mesh.session(principal).with_client("cli");
    let query_id = format!(
        "cli-{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    if args.timeout > 0 {
        // The limit covers planning too, and work that never yields (constant folding of a
        // huge value, an operator's inner loop): at the deadline the query is recorded and the
        // process ends, whatever its threads are doing.
        let (session, sql, query_id, secs) = (session.clone(), sql.clone(), query_id.clone(), args.timeout);
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(secs));
            let message = format!("the query exceeded its time limit of {secs} s (--timeout)");
            session.audit_settled(&sql, &query_id, &message);
            eprintln!("error: {message}");
            std::process::exit(1);
        });
    }
    let options = meshql::SqlOptions {
        default_schema: None,
        query_id: Some(query_id),
    };
    let result = session.sql_with(&sql, &options).await?;
    for w in result.warnings() {
        eprintln!("warning: {w}");
    }
    let schema = result.schema();
    let run = async {
        let stream = result.stream_with_memory_limit(args.memory).await?;
        output::write(stream, schema, args.format, args.output.as_deref()).await
    };
    if args.timeout == 0 {
        run.await?;
    } else {
        tokio::time::timeout(std::time::Duration::from_secs(args.timeout), run)
            .await
            .map_err(|_| anyhow::anyhow!("the query exceeded its time limit of {} s (--timeout)", args.timeout))??;
    }
    Ok(ExitCode::SUCCESS)
}

fn catalog_list(mesh: &Mesh) -> Result<ExitCode> {
    let def = mesh.definition();
    println!("mesh {} ({})", def.settings.name, def.root.display());
    for domain in &def.domains {
        let d = &domain.descriptor;
        println!();
        println!(
            "{}  — {}{}",
            domain.name,
            d.title.as_deref().unwrap_or(&d.name),
            d.owner.as_deref().map(|o| format!(" · owner {o}")).unwrap_or_default()
        );
        let mut rows = vec![vec![
            "TABLE".to_string(),
            "OWNER".into(),
            "STATUS".into(),
            "FORMAT".into(),
            "LOCATION".into(),
        ]];
        let all = mesh.search_as_operator(&meshql::discovery::Search::all());
        for t in all.iter().filter(|t| t.domain == domain.name) {
            let (format, location) = match &t.binding {
                Ok(b) => (b.storage.format.to_string(), b.storage.location.clone()),
                Err(_) => ("-".to_string(), "-".to_string()),
            };
            let status = match &t.binding {
                Ok(_) => t.product.status.clone(),
                Err(_) => "invalid".to_string(),
            };
            rows.push(vec![
                format!("mesh.{}", t.qualified_name()),
                meshql::discovery::owner(&def, t).unwrap_or("-").to_string(),
                status,
                format,
                location,
            ]);
        }
        print_columns(&rows);
    }
    if !def.problems.is_empty() {
        println!();
        println!("not loaded ({}):", def.problems.len());
        for p in &def.problems {
            println!("  {p}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_columns(rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        println!("  {}", line.join("  ").trim_end());
    }
}

async fn catalog_show(mesh: &Mesh, name: &str) -> Result<ExitCode> {
    let name = name.strip_prefix("mesh.").unwrap_or(name);
    let Some((domain, table)) = name.split_once('.') else {
        bail!("expected <domain>.<product>, got {name:?}");
    };
    let def = mesh.definition();
    let Some(entry) = def.table(domain, table) else {
        bail!("no product mesh.{domain}.{table} in this mesh (see `meshql catalog list`)");
    };
    let p = &entry.product;
    println!("mesh.{}", entry.qualified_name());
    println!(
        "  product      {} ({}), version {}",
        p.display_name(),
        p.id,
        p.version.as_deref().unwrap_or("-")
    );
    println!("  status       {}", p.status);
    println!("  owner        {}", p.owner().unwrap_or("-"));
    if let Some(s) = p.support_channel() {
        println!("  support      {s}");
    }
    if let Some(purpose) = p.description.as_ref().and_then(|d| d.purpose.as_deref()) {
        println!("  purpose      {purpose}");
    }
    println!("  descriptor   {}", p.source.display());
    if !entry.port.is_empty() {
        println!("  output port  {} {}", entry.port, entry.port_version);
    }
    for input in &p.input_ports {
        println!(
            "  input port   {} {} (contract {})",
            input.name, input.version, input.contract_id
        );
    }
    let binding = match &entry.binding {
        Ok(b) => b,
        Err(e) => {
            println!("  UNAVAILABLE  {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let c = &binding.contract;
    println!(
        "  contract     {} {} ({}), {}",
        c.id,
        c.version,
        c.status,
        c.source.display()
    );
    println!(
        "  storage      {} at {}",
        binding.storage.format, binding.storage.location
    );
    if let Some(pin) = binding.storage.pin {
        println!("  pinned       {pin:?}");
    }
    let mut rows = vec![vec![
        "COLUMN".to_string(),
        "TYPE".into(),
        "REQUIRED".into(),
        "KEY".into(),
        "CLASSIFICATION".into(),
        "TAGS".into(),
        "DESCRIPTION".into(),
    ]];
    for prop in &binding.schema.properties {
        rows.push(vec![
            prop.name.clone(),
            prop.physical_type
                .clone()
                .or_else(|| prop.logical_type.map(|t| t.to_string()))
                .unwrap_or_else(|| "-".into()),
            if prop.required { "yes" } else { "" }.into(),
            if prop.primary_key {
                "pk"
            } else if prop.unique {
                "unique"
            } else {
                ""
            }
            .into(),
            prop.classification.clone().unwrap_or_default(),
            prop.tags.join(","),
            prop.description.clone().unwrap_or_default(),
        ]);
    }
    println!();
    print_columns(&rows);
    match mesh.catalog().open(domain, table).await {
        Ok(t) => {
            println!();
            match t.version {
                Some(v) => println!("  storage matches the contract (version {v})"),
                None => println!("  storage matches the contract"),
            }
            for w in &t.conformance.warnings {
                println!("  warning: {w}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!();
            println!("  UNAVAILABLE  {}", e.reason());
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn check(args: CheckArgs) -> Result<ExitCode> {
    let mesh = open(&args.mesh)?;
    let options = meshql::CheckOptions {
        domain: args.domain.clone(),
        product: args
            .product
            .as_deref()
            .map(|p| p.strip_prefix("mesh.").unwrap_or(p).to_string()),
        quality: !args.no_quality,
        record: true,
    };
    if let Some(p) = &options.product {
        if mesh.definition().tables.iter().all(|t| &t.qualified_name() != p) {
            bail!("no product mesh.{p} in this mesh (see `meshql catalog list`)");
        }
    }
    if let Some(d) = &options.domain {
        if mesh.definition().domain(d).is_none() {
            bail!("no domain {d:?} in this mesh (see `meshql catalog list`)");
        }
    }
    let report = mesh.check(&options).await;
    let text = report::render(&report, args.format);
    match &args.output {
        Some(path) => std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?,
        None => print!("{text}"),
    }
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn catalog_search(args: &SearchArgs) -> Result<ExitCode> {
    let mesh = open(&args.mesh)?;
    let def = mesh.definition();
    let words: Vec<String> = args.text.clone();
    let mut rows = vec![vec![
        "TABLE".to_string(),
        "OWNER".into(),
        "STATUS".into(),
        "TAGS".into(),
        "DESCRIPTION".into(),
    ]];
    let search = meshql::discovery::Search {
        words,
        domain: args.domain.clone(),
        owner: args.owner.clone(),
        tag: args.tag.clone(),
        classification: args.classification.clone(),
    };
    // The operator's view: the CLI runs where the mesh's files are.
    for t in mesh.search_as_operator(&search) {
        let p = &t.product;
        let owner = meshql::discovery::owner(&def, &t);
        let description = p.description.as_ref();
        rows.push(vec![
            format!("mesh.{}", t.qualified_name()),
            owner.unwrap_or("-").to_string(),
            t.compliance.lifecycle.as_str().to_string(),
            p.tags.join(","),
            description
                .and_then(|d| d.purpose.clone())
                .unwrap_or_default()
                .chars()
                .take(80)
                .collect(),
        ]);
    }
    if rows.len() == 1 {
        println!("no product matches");
        return Ok(ExitCode::FAILURE);
    }
    print_columns(&rows);
    Ok(ExitCode::SUCCESS)
}
