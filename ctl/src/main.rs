//! `regindexctl`: schema, one-off scans, dead letters, tag problems, reindex triggers,
//! broker definitions.

mod display;
mod progress;

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Args, Parser, Subcommand};
use regindex::bus::bodhi::{Nvr, UpdateTarget};
use regindex::bus::dead_letters::{DeadLetterQueue, Filter};
use regindex::bus::definitions::{self, BrokerLogin};
use regindex::bus::fedora_messaging::{self, UpdateSpec};
use regindex::bus::messages;
use regindex::bus::{OutgoingMessage, Publisher, Topology};
use regindex::config::{ComposeCompleteMode, Config};
use regindex::model::RepositoryName;
use regindex::registry::RegistryClient;
use regindex::store::Store;
use regindex::sync::Syncer;
use secrecy::ExposeSecret;

use progress::TerminalProgress;

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
    /// Tags the index could not use (or only in part), and why.
    Problems {
        /// Only this repository.
        #[arg(long)]
        repository: Option<String>,
    },
    /// Asks the workers to reindex: what a Bodhi compose or update message asks, or one
    /// repository.
    TriggerReindex(TriggerArgs),
    /// Prints RabbitMQ definitions for provisioning the broker: the topology, the vhost and
    /// the user of `amqp.url` (password salted and hashed) with rights on that vhost only.
    BrokerDefinitions,
    /// The broker's queues.
    #[command(subcommand)]
    Bus(BusCommand),
}

#[derive(Subcommand)]
enum BusCommand {
    /// Brings every queue to the configured `amqp.queue_type`, moving its messages into a
    /// queue of the new type (stop the workers first; see docs/operations.md).
    Migrate,
}

#[derive(Args)]
struct TriggerArgs {
    /// Refetch only this repository (an internal `regindex.refetch` message).
    #[arg(long, conflicts_with = "update_nvr")]
    repository: Option<String>,
    /// Publish a `bodhi.update.complete` for these builds (Koji NVRs), as Bodhi does when an
    /// update reaches stable or testing: the workers refetch the repositories holding them.
    #[arg(long = "update-nvr", value_name = "NVR", num_args = 1..)]
    update_nvr: Vec<String>,
    /// With --update-nvr: the repository the update reached.
    #[arg(long, value_enum, default_value = "stable")]
    update_target: Target,
    /// With --update-nvr: the update's alias.
    #[arg(long, default_value = "REGINDEXCTL-UPDATE")]
    update_alias: String,
    /// With --update-nvr: the Bodhi release (`F41F` flatpaks, `F41C` containers).
    #[arg(long, default_value = "F41F")]
    update_release: String,
    /// The content type: `flatpak` or `container` (workers ignore any other).
    #[arg(long, default_value = "flatpak")]
    ctype: String,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Target {
    Stable,
    Testing,
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
        Err(e) => regindex::process::fail("regindexctl", e.as_ref()),
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
        Command::Problems { repository } => {
            let repository = repository
                .as_deref()
                .map(RepositoryName::parse)
                .transpose()?;
            let store = Store::connect(&config.database)
                .await
                .context("connecting to the database")?;
            let problems = store.problems(repository.as_ref()).await?;
            print!("{}", display::problems(&problems, chrono::Utc::now()));
        }
        Command::TriggerReindex(args) => trigger(&config, args).await?,
        Command::BrokerDefinitions => broker_definitions(&config)?,
        Command::Bus(BusCommand::Migrate) => bus_migrate(&config).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn bus_migrate(config: &Config) -> Result<()> {
    use regindex::bus::migrate::Outcome;
    let connection = regindex::bus::connect(&config.amqp.url).await?;
    let topology = Topology::from_config(config);
    let reports = regindex::bus::migrate::migrate(&connection, &topology)
        .await
        .context("migrating the queues (run again to resume)")?;
    let queue_type = topology.queue_type;
    for report in reports {
        let what = match report.outcome {
            Outcome::Unchanged => format!("already {queue_type}"),
            Outcome::Created => format!("created ({queue_type})"),
            Outcome::Migrated { messages } => {
                format!("migrated to {queue_type}, {messages} messages")
            }
        };
        println!("{}: {what}", report.queue);
    }
    let _ = connection.close(200, "done").await;
    Ok(())
}

fn broker_definitions(config: &Config) -> Result<()> {
    let login = BrokerLogin::from_url(config.amqp.url.first().expose_secret())?;
    // A fresh random salt per run (a v4 uuid's bytes come from the OS's generator).
    let random = uuid::Uuid::new_v4();
    let salt: [u8; 4] = random.as_bytes()[..4].try_into()?;
    let value = definitions::definitions(&Topology::from_config(config), &login, salt);
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

async fn write_static(store: &Store, config: &Config) -> Result<()> {
    let written = regindex::index::static_index::write_static_indexes(store, config)
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
    {
        syncer = syncer.with_observer(std::sync::Arc::new(backfill));
    }
    let started = chrono::Utc::now();
    let summary = syncer
        .scan(config.worker.concurrency, &TerminalProgress::new())
        .await
        .context("scanning")?;
    println!("{summary}");
    // Counts as the workers' periodic scan: theirs is due one interval after this one.
    store
        .record_success(regindex::store::PeriodicJob::FullScan, started)
        .await
        .context("recording the scan")?;
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

/// What `trigger-reindex` publishes, and what it tells the operator the workers will do.
struct Trigger {
    message: OutgoingMessage,
    effect: String,
}

/// Builds the message, or refuses one the workers would only ignore.
fn plan_trigger(config: &Config, args: &TriggerArgs) -> Result<Trigger> {
    if let Some(name) = &args.repository {
        let repository = RepositoryName::parse(name)?;
        return Ok(Trigger {
            message: messages::refetch_message(&config.amqp.events_exchange, repository)?,
            effect: format!("refetch of {name} requested"),
        });
    }
    let ctype = args.ctype.as_str();
    if !matches!(ctype, "container" | "flatpak") {
        bail!("workers ignore {ctype:?} Bodhi messages (only container and flatpak content is in the registry): nothing published");
    }
    if !args.update_nvr.is_empty() {
        let builds = args
            .update_nvr
            .iter()
            .map(|nvr| Nvr::parse(nvr))
            .collect::<Result<Vec<_>, _>>()?;
        let target = match args.update_target {
            Target::Stable => UpdateTarget::Stable,
            Target::Testing => UpdateTarget::Testing,
        };
        let spec = UpdateSpec {
            target,
            alias: &args.update_alias,
            release: &args.update_release,
            content_type: ctype,
            builds: &builds,
        };
        let message = fedora_messaging::update_complete(&config.amqp, "regindexctl", &spec);
        let effect = format!(
            "{ctype} update {} ({} builds) published on {}: the workers refetch the repositories holding these builds",
            args.update_alias,
            builds.len(),
            message.routing_key
        );
        return Ok(Trigger { message, effect });
    }
    if config.bodhi.compose_complete == ComposeCompleteMode::Off {
        bail!("bodhi.compose_complete is off in this configuration: the workers ignore compose messages, nothing published (use --update-nvr or --repository)");
    }
    let message =
        fedora_messaging::compose_complete(&config.amqp, "regindexctl", "regindexctl", ctype);
    let effect = format!(
        "{ctype} compose-complete published on {}: the workers refetch the repositories of recent updates, then check every repository (tag lists and HEADs) and refetch those that changed",
        message.routing_key
    );
    Ok(Trigger { message, effect })
}

async fn trigger(config: &Config, args: TriggerArgs) -> Result<()> {
    let Trigger { message, effect } = plan_trigger(config, &args)?;
    let publisher = Publisher::new(config.amqp.url.clone(), Some(Topology::new(&config.amqp)));
    publisher
        .publish(&message)
        .await
        .with_context(|| format!("publishing {} to {}", message.routing_key, message.exchange))?;
    publisher.close().await;
    println!("{effect}");
    Ok(())
}
