//! `regindexctl`: schema, one-off scans, dead letters, reindex triggers, broker definitions.

mod display;

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Args, Parser, Subcommand};
use regindex::bus::dead_letters::{DeadLetterQueue, Filter};
use regindex::bus::definitions::{self, BrokerLogin};
use regindex::bus::messages::RefetchRequest;
use regindex::bus::topology::routing_key;
use regindex::bus::{fedora_messaging, OutgoingMessage, Publisher, Topology};
use regindex::config::Config;
use regindex::model::RepositoryName;
use regindex::registry::RegistryClient;
use regindex::store::Store;
use regindex::sync::{Syncer, TerminalProgress};
use secrecy::ExposeSecret;

#[derive(Parser)]
#[command(name = "regindexctl", about = "regindex operations")]
struct Cli {
    /// Configuration file (YAML); the environment (REGINDEX_*) overrides it.
    #[arg(long, global = true, env = "REGINDEX_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates or updates the database schema.
    Migrate,
    /// Refetches every repository now, prints a summary and rewrites the static index files.
    Scan,
    /// Writes the configured static index files from the index as it is.
    WriteStaticIndexes,
    /// The dead-letter queue.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Asks the workers to reindex everything (as a Bodhi compose would), or one repository.
    TriggerReindex {
        /// Refetch only this repository (an internal `regindex.refetch` message).
        #[arg(long)]
        repository: Option<String>,
        /// The compose type of the compose-complete message (`container` or `flatpak` reindex).
        #[arg(long, default_value = "flatpak")]
        ctype: String,
    },
    /// Prints RabbitMQ definitions for provisioning the broker: the topology, the vhost and
    /// the user of `amqp.url` (password salted and hashed) with rights on that vhost only.
    BrokerDefinitions,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Lists dead letters, oldest first.
    List,
    /// Shows one dead letter: headers and body.
    Show { id: String },
    /// Puts dead letters back on the work queue, attempts reset.
    Replay(ReplayArgs),
    /// Deletes every dead letter.
    Purge {
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Args)]
#[command(group(ArgGroup::new("which").required(true).multiple(false)))]
struct ReplayArgs {
    /// Every dead letter.
    #[arg(long, group = "which")]
    all: bool,
    /// These ids (repeatable).
    #[arg(long = "id", group = "which")]
    ids: Vec<String>,
    /// Those first published with this routing key.
    #[arg(long, group = "which")]
    routing_key: Option<String>,
    /// Those whose failure reason contains this text.
    #[arg(long, group = "which")]
    reason_contains: Option<String>,
}

impl ReplayArgs {
    fn filter(self) -> Filter {
        if self.all {
            Filter::All
        } else if let Some(key) = self.routing_key {
            Filter::RoutingKey(key)
        } else if let Some(text) = self.reason_contains {
            Filter::ReasonContains(text)
        } else {
            Filter::Ids(self.ids)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    regindex::telemetry::init_tracing();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("regindexctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let config = Config::load(cli.config.as_deref()).context("loading the configuration")?;
    match cli.command {
        Command::Migrate => {
            let store = Store::connect_unchecked(&config.database)
                .await
                .context("connecting to the database")?;
            store.migrate().await.context("applying the schema")?;
            println!("schema is up to date");
        }
        Command::Scan => return scan(&config).await,
        Command::WriteStaticIndexes => {
            let store = Store::connect(&config.database)
                .await
                .context("connecting to the database")?;
            write_static(&store, &config).await?;
        }
        Command::Dlq(command) => dlq(&config, command).await?,
        Command::TriggerReindex { repository, ctype } => {
            trigger(&config, repository, &ctype).await?
        }
        Command::BrokerDefinitions => broker_definitions(&config)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn broker_definitions(config: &Config) -> Result<()> {
    let login = BrokerLogin::from_url(config.amqp.url.expose_secret())?;
    // A fresh random salt per run (a v4 uuid's bytes come from the OS's generator).
    let random = uuid::Uuid::new_v4();
    let salt: [u8; 4] = random.as_bytes()[..4].try_into()?;
    let value = definitions::definitions(&Topology::from_config(config), &login, salt);
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

async fn write_static(store: &Store, config: &Config) -> Result<()> {
    let written = regindex::static_index::write_static_indexes(store, config)
        .await
        .context("writing the static index files")?;
    for index in written {
        let state = if index.changed {
            "written"
        } else {
            "unchanged"
        };
        println!(
            "{}: {} ({} bytes, {state})",
            index.name,
            index.path.display(),
            index.bytes
        );
    }
    Ok(())
}

async fn scan(config: &Config) -> Result<ExitCode> {
    let store = Store::connect(&config.database)
        .await
        .context("connecting to the database")?
        .with_icons(&config.icons);
    let registry = RegistryClient::new(&config.registry).context("registry client")?;
    let mut syncer = Syncer::new(registry.clone(), store.clone());
    // The activity history records what the scan finds (backfill).
    if let Some(backfill) =
        regindex::history::backfill::Backfill::from_config(config, registry, store.pool().clone())
            .context("history configuration")?
    {
        syncer = syncer.with_observer(std::sync::Arc::new(backfill));
    }
    let summary = syncer
        .scan(config.worker.concurrency, &TerminalProgress::new())
        .await
        .context("scanning")?;
    println!("{summary}");
    write_static(syncer.store(), config).await?;
    for (repository, reason) in &summary.failed {
        eprintln!("failed: {repository}: {reason}");
    }
    Ok(if summary.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn dlq(config: &Config, command: DlqCommand) -> Result<()> {
    let connection = regindex::bus::connect(&config.amqp.url).await?;
    let queue = DeadLetterQueue::open(&connection, Topology::new(&config.amqp)).await?;
    let mut out = std::io::stdout().lock();
    match command {
        DlqCommand::List => {
            let letters = queue.list().await?;
            write!(out, "{}", display::table(&letters, chrono::Utc::now()))?;
        }
        DlqCommand::Show { id } => {
            let letter = queue
                .show(&id)
                .await?
                .with_context(|| format!("no dead letter with id {id}"))?;
            write!(out, "{}", display::detail(&letter))?;
        }
        DlqCommand::Replay(args) => {
            let filter = args.filter();
            let summary = queue.replay(&filter).await?;
            if let Filter::Ids(ids) = &filter {
                let missing: Vec<&String> = ids
                    .iter()
                    .filter(|id| !summary.replayed.contains(id))
                    .collect();
                if !missing.is_empty() {
                    bail!(
                        "replayed {}, but found no dead letter with id {missing:?}",
                        summary.replayed.len()
                    );
                }
            }
            writeln!(
                out,
                "replayed {} dead letters, {} left",
                summary.replayed.len(),
                summary.kept
            )?;
        }
        DlqCommand::Purge { yes } => {
            if !yes
                && !confirm(&format!(
                    "delete all {} dead letters?",
                    queue.count().await?
                ))?
            {
                bail!("not purged (confirm, or pass --yes)");
            }
            writeln!(out, "purged {} dead letters", queue.purge().await?)?;
        }
    }
    let _ = connection.close(200, "done").await;
    Ok(())
}

/// Asks on the terminal; no terminal means no.
fn confirm(question: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

async fn trigger(config: &Config, repository: Option<String>, ctype: &str) -> Result<()> {
    let publisher = Publisher::new(config.amqp.url.clone(), Some(Topology::new(&config.amqp)));
    let message = match &repository {
        Some(name) => {
            let repository = RepositoryName::parse(name)?;
            let body = serde_json::to_vec(&RefetchRequest { repository })?;
            OutgoingMessage::json(&config.amqp.events_exchange, routing_key::REFETCH, body)
        }
        None => {
            fedora_messaging::compose_complete(&config.amqp, "regindexctl", "regindexctl", ctype)
        }
    };
    publisher
        .publish(&message)
        .await
        .with_context(|| format!("publishing {} to {}", message.routing_key, message.exchange))?;
    publisher.close().await;
    match repository {
        Some(name) => println!("refetch of {name} requested"),
        None => println!(
            "{ctype} compose-complete published on {}: every repository will be refetched",
            message.routing_key
        ),
    }
    Ok(())
}
