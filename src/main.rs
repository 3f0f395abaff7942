//! `deskprov`: the command line. `serve` runs the server; the other commands work offline on
//! the data directory.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use deskprov::catalog::Catalog;
use deskprov::config::{Config, EXAMPLE};
use deskprov::domain::GroupId;
use deskprov::server::{open_store, Server};

#[derive(Parser)]
#[command(
    name = "deskprov",
    version,
    about = "Provisioning server for SIP desk phones"
)]
struct Cli {
    /// Configuration file (every key optional; see `deskprov config example`).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (phones on :8443, admin API on 127.0.0.1:8444 by default).
    Serve,
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Template helpers.
    Templates {
        #[command(subcommand)]
        command: TemplatesCommand,
    },
    /// Print a device's file exactly as the phone would receive it (offline).
    Render {
        /// The device's MAC (any accepted form).
        #[arg(long)]
        mac: String,
        /// The file name the phone requests, e.g. 0004f2abcdef.cfg.
        #[arg(long)]
        file: String,
    },
    /// Import an export document (JSON) or, with --group and --kind, a CSV file; offline on
    /// the data dir (the server must not be running; use POST /api/v1/import while it runs).
    Import {
        /// The file (`-` for standard input).
        file: PathBuf,
        /// Report what would be created, changed and left; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// The group a CSV file is for.
        #[arg(long)]
        group: Option<String>,
        /// The CSV file's kind: users, devices, sca or members (absent: a JSON document).
        #[arg(long)]
        kind: Option<String>,
    },
    /// Print the export document (JSON) or one group's CSV file of a kind; offline on the
    /// data dir (use GET /api/v1/export while the server runs).
    Export {
        /// One group only (required for CSV).
        #[arg(long)]
        group: Option<String>,
        #[arg(long, value_enum, default_value_t = ExportFormat::Json)]
        format: ExportFormat,
        /// The CSV kind: users, devices, sca or members.
        #[arg(long)]
        kind: Option<String>,
        /// Include SIP and provisioning passwords (so an import reproduces them).
        #[arg(long)]
        secrets: bool,
    },
    /// Write a backup of the data dir to FILE, offline (the server must not be running; while
    /// it runs, use POST /api/v1/backup, see the README).
    Backup { file: PathBuf },
    /// Restore a backup FILE into the configured data dir, which must be new or empty.
    Restore { file: PathBuf },
    /// Copy the data dir's embedded store into an empty PostgreSQL database (--to), or a
    /// database into an empty data dir (--from), offline; then compare every stored entry and
    /// every rendered file of both sides (non-zero exit on any difference). Both sides use
    /// the configured sealing key file (store.key_file).
    Migrate {
        /// postgres://... of the empty database to copy the data dir into.
        #[arg(long, conflicts_with = "from", required_unless_present = "from")]
        to: Option<String>,
        /// postgres://... of the database to copy into the (empty) data dir.
        #[arg(long)]
        from: Option<String>,
    },
    /// Manage admin API tokens offline (the server must not be running on the data dir).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    Json,
    Csv,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print a commented configuration file with every key and its default.
    Example,
}

#[derive(Subcommand)]
enum TemplatesCommand {
    /// Render every golden fixture and compare it with the expected files.
    Check {
        /// Fixture folder (fixtures/<model-id>/<scenario>/).
        #[arg(long, default_value = "fixtures")]
        fixtures: PathBuf,
        /// Read models from this folder (same layout as device-templates/) on top of the built-ins.
        #[arg(long)]
        templates_dir: Option<PathBuf>,
        /// Rewrite the expected files from what renders now (review the diff!).
        #[arg(long)]
        update: bool,
        /// Check one model only.
        #[arg(long)]
        model: Option<String>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print its secret (shown once).
    Create {
        #[arg(long, default_value = "cli")]
        name: String,
        /// Scope the token to one group.
        #[arg(long)]
        group: Option<String>,
    },
    /// List tokens (without secrets).
    List,
    /// Revoke a token by id.
    Revoke { id: String },
}

fn init_logs(format: LogFormat) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Whatever RUST_LOG says: the storage engines' debug output holds record bytes.
    for d in deskprov::store::ENGINE_LOG_DIRECTIVES {
        filter = filter.add_directive(d.parse().expect("a valid directive"));
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, String> {
    match path {
        Some(p) => Config::load(p).map_err(|e| e.to_string()),
        None => Ok(Config::default()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let result = match cli.command {
        Command::Config {
            command: ConfigCommand::Example,
        } => {
            print!("{EXAMPLE}");
            Ok(())
        }
        Command::Serve => load_config(cli.config.as_ref()).and_then(serve),
        Command::Token { command } => {
            load_config(cli.config.as_ref()).and_then(|c| token(c, command))
        }
        Command::Templates {
            command:
                TemplatesCommand::Check {
                    fixtures,
                    templates_dir,
                    update,
                    model,
                },
        } => load_config(cli.config.as_ref())
            .and_then(|c| templates_check(c, &fixtures, templates_dir, update, model.as_deref())),
        Command::Import {
            file,
            dry_run,
            group,
            kind,
        } => load_config(cli.config.as_ref())
            .and_then(|c| import(c, &file, dry_run, group.as_deref(), kind.as_deref())),
        Command::Export {
            group,
            format,
            kind,
            secrets,
        } => load_config(cli.config.as_ref()).and_then(|c| {
            let kind = match (format, kind) {
                (ExportFormat::Json, None) => None,
                (ExportFormat::Json, Some(_)) => return Err("--kind needs --format csv".into()),
                (ExportFormat::Csv, Some(k)) => Some(k),
                (ExportFormat::Csv, None) => return Err("--format csv needs --kind".into()),
            };
            export(c, group.as_deref(), kind.as_deref(), secrets)
        }),
        Command::Backup { file } => load_config(cli.config.as_ref()).and_then(|c| {
            let store = offline_store(&c)?;
            let (bytes, seq) = deskprov::backup::backup(&store, &c.data_dir)?;
            std::fs::write(&file, &bytes).map_err(|e| format!("{}: {e}", file.display()))?;
            println!(
                "backup of seq {seq} written to {} ({} bytes)",
                file.display(),
                bytes.len()
            );
            Ok(())
        }),
        Command::Restore { file } => load_config(cli.config.as_ref()).and_then(|c| {
            let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let r = deskprov::backup::restore(&bytes, &c.data_dir)?;
            println!(
                "restored seq {} ({} stored pairs, {} files) into {}",
                r.seq,
                r.entries,
                r.files,
                c.data_dir.display()
            );
            Ok(())
        }),
        Command::Migrate { to, from } => load_config(cli.config.as_ref()).and_then(|c| {
            use deskprov::migrate::{migrate, Direction};
            let (direction, url) = match (to, from) {
                (Some(u), _) => (Direction::ToPostgres, u),
                (None, Some(u)) => (Direction::FromPostgres, u),
                (None, None) => return Err("give --to or --from".into()),
            };
            let summary = migrate(&c, direction, &url)?;
            for line in &summary.lines {
                println!("{line}");
            }
            if summary.differences > 0 {
                return Err(format!(
                    "the copy differs from the original in {} entries or files",
                    summary.differences
                ));
            }
            println!("the copy is identical");
            Ok(())
        }),
        Command::Render { mac, file } => {
            load_config(cli.config.as_ref()).and_then(|c| render(c, &mac, &file))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("deskprov: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let server = Server::start(config).await.map_err(|e| e.to_string())?;
        let data_dir = server.app.config.data_dir.display().to_string();
        // The banner goes to stdout: it is for the person (or test) that started the server.
        println!("deskprov {} serving", env!("CARGO_PKG_VERSION"));
        println!("  admin API:  https://{}", server.admin_addr);
        println!("  phones:     https://{}", server.phones_addr);
        if let Some(a) = server.phones_http_addr {
            println!("  phones:     http://{a}");
        }
        if let Some(ca) = &server.ca_pem {
            println!("  CA for phones and admin clients: {}", ca.display());
        }
        match &server.new_admin_token {
            Some(t) => {
                println!("  admin token (shown once; also in {data_dir}/admin-token): {t}");
            }
            None => println!("  admin token: {data_dir}/admin-token"),
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        server.run(shutdown_signal()).await;
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn token(config: Config, command: TokenCommand) -> Result<(), String> {
    let catalog = Arc::new(Catalog::load(config.templates_dir()).map_err(|e| e.to_string())?);
    let store = open_store(&config, catalog).map_err(|e| {
        format!("{e} (is a server running on this data directory? use the API: /api/v1/tokens)")
    })?;
    match command {
        TokenCommand::Create { name, group } => {
            let group = group
                .map(|g| GroupId::parse(&g).map_err(|e| e.detail))
                .transpose()?;
            let (t, secret) = store
                .create_token("cli", &name, group)
                .map_err(|e| e.to_string())?;
            eprintln!(
                "created token {} ({}); the secret is shown once:",
                t.id, t.name
            );
            println!("{secret}");
        }
        TokenCommand::List => {
            for t in store.read().tokens.values() {
                let scope = t
                    .group
                    .as_ref()
                    .map(|g| g.to_string())
                    .unwrap_or_else(|| "platform".into());
                println!("{}\t{}\t{}\t{}", t.id, t.name, scope, t.created_at);
            }
        }
        TokenCommand::Revoke { id } => {
            store.delete_token("cli", &id).map_err(|e| e.to_string())?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

fn offline_store(config: &Config) -> Result<deskprov::store::Store, String> {
    let catalog = Arc::new(Catalog::load(config.templates_dir()).map_err(|e| e.to_string())?);
    open_store(config, catalog)
        .map_err(|e| format!("{e} (is a server running on this data directory? use the admin API)"))
}

fn import(
    config: Config,
    file: &std::path::Path,
    dry_run: bool,
    group: Option<&str>,
    kind: Option<&str>,
) -> Result<(), String> {
    let text = if file == std::path::Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map_err(|e| e.to_string())?;
        s
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?
    };
    let store = offline_store(&config)?;
    let outcome = store.import_text(&text, group, kind, dry_run)?;
    match outcome {
        deskprov::store::ImportOutcome::Done(report) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            Ok(())
        }
        deskprov::store::ImportOutcome::Refused(errors) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&errors).unwrap_or_default()
            );
            Err("bad rows (listed above); nothing was imported".into())
        }
    }
}

fn export(
    config: Config,
    group: Option<&str>,
    kind: Option<&str>,
    secrets: bool,
) -> Result<(), String> {
    let store = offline_store(&config)?;
    let mut out = store.export_text(group, kind, secrets)?;
    if !out.ends_with('\n') {
        out.push('\n');
    }
    use std::io::Write;
    match std::io::stdout().write_all(out.as_bytes()) {
        // `deskprov export | head`: the reader left; not an error of the export.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.to_string()),
        _ => Ok(()),
    }
}

fn templates_check(
    config: Config,
    fixtures: &std::path::Path,
    dir: Option<PathBuf>,
    update: bool,
    model: Option<&str>,
) -> Result<(), String> {
    let dir = dir.or_else(|| config.templates_dir().map(PathBuf::from));
    let catalog = Catalog::load(dir.as_deref()).map_err(|e| e.to_string())?;
    let (n, problems) = deskprov::render::fixtures::check_all(&catalog, fixtures, update, model)?;
    for p in &problems {
        eprintln!("{p}");
    }
    if problems.is_empty() {
        println!(
            "{n} fixture scenarios OK{}",
            if update {
                " (expected files rewritten)"
            } else {
                ""
            }
        );
        Ok(())
    } else {
        Err(format!(
            "{} problems in {n} fixture scenarios",
            problems.len()
        ))
    }
}

fn render(config: Config, mac: &str, file: &str) -> Result<(), String> {
    use deskprov::render::{device_file, Preview, Renderer};
    let mac = deskprov::domain::Mac::parse(mac).map_err(|e| e.detail)?;
    let catalog = Arc::new(Catalog::load(config.templates_dir()).map_err(|e| e.to_string())?);
    let store = open_store(&config, catalog.clone()).map_err(|e| e.to_string())?;
    let renderer = Renderer::new(
        catalog,
        config.phone_base_url(None),
        &store.template_overrides(),
    );
    let state = store.read();
    let out = device_file(&renderer, &state, &mac, file).map_err(|e| match e {
        Preview::NotFound => format!("device {mac} does not request a file named {file}"),
        Preview::Failed(e) => e.to_string(),
    })?;
    use std::io::Write;
    std::io::stdout()
        .write_all(&out.bytes)
        .map_err(|e| e.to_string())
}
