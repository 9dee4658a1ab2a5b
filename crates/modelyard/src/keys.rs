//! `modelyard keys`: API keys, managed directly in the database named by the
//! config (so the first admin key can be made before the server requires
//! one). The server notices new and revoked keys within seconds. Also the
//! budgets and rate limits of a key (`keys limits`) and of a project
//! (`projects limits`), which a running server reads within seconds.

use anyhow::{bail, Context};
use modelyard_core::limits::Limits;
use modelyard_server::config::Config;
use modelyard_server::service::error::ServiceError;
use modelyard_server::service::usage_limits::{self, LimitsPatch, LimitsView};
use modelyard_store::{LimitSubject, ProjectId, Role, Store};

use crate::cli::LimitsArgs;

async fn open(config: &Config) -> anyhow::Result<Store> {
    Store::connect(&config.storage.url)
        .await
        .context("opening the database named by storage.url")
}

async fn project(store: &Store, name: &str, create: bool) -> anyhow::Result<ProjectId> {
    if let Some(id) = store.project_by_name(name).await? {
        return Ok(id);
    }
    if !create {
        bail!("no project named {name:?}");
    }
    Ok(store.create_project(name).await?)
}

/// `keys create [--project NAME] [--role ROLE] [--name NAME]`: prints the
/// key (shown only now) on stdout.
pub(crate) async fn create(
    config: &Config,
    project_name: &str,
    role: &str,
    name: Option<&str>,
) -> anyhow::Result<()> {
    let role = Role::parse(role).context("--role must be admin, member or read")?;
    let store = open(config).await?;
    let project = project(&store, project_name, true).await?;
    let created =
        modelyard_server::service::keys::create(&store, &project, name.map(str::to_owned), role)
            .await?;
    let (row, secret) = (created.row, created.secret);
    eprintln!(
        "created {} key {} ({}) in project {project_name}; it is shown only once:",
        row.role.as_str(),
        row.id,
        row.prefix
    );
    println!("{secret}");
    Ok(())
}

/// `keys ls [--project NAME]`.
pub(crate) async fn list(config: &Config, project_name: &str) -> anyhow::Result<()> {
    let store = open(config).await?;
    let project = project(&store, project_name, false).await?;
    let keys = modelyard_server::service::keys::list(&store, &project).await?;
    println!(
        "{:<36}  {:<11}  {:<6}  {:<8}  NAME",
        "ID", "PREFIX", "ROLE", "STATE"
    );
    for key in keys {
        let state = if key.revoked_at_ms.is_some() {
            "revoked"
        } else {
            "active"
        };
        println!(
            "{:<36}  {:<11}  {:<6}  {:<8}  {}",
            key.id,
            key.prefix,
            key.role.as_str(),
            state,
            key.name
        );
    }
    Ok(())
}

/// `keys revoke ID [--project NAME]`.
pub(crate) async fn revoke(config: &Config, project_name: &str, id: &str) -> anyhow::Result<()> {
    let store = open(config).await?;
    let project = project(&store, project_name, false).await?;
    match modelyard_server::service::keys::revoke(&store, &project, id).await {
        Ok(()) => {}
        Err(ServiceError::NotFound { .. }) => {
            bail!("no active key {id:?} in project {project_name}")
        }
        Err(ServiceError::Conflict {
            code: "last_admin_key",
            ..
        }) => bail!(
            "{id} is the last active admin key of project {project_name}; create another \
             admin key first (`modelyard keys create --role admin`), then revoke this one"
        ),
        Err(err) => return Err(err.into()),
    }
    eprintln!("revoked {id}");
    Ok(())
}

/// The change `args` asks for: each flag given sets its limit.
fn limits_patch(args: &LimitsArgs) -> LimitsPatch {
    let set = |v: Option<i64>| v.map(Some);
    LimitsPatch {
        max_cost_usd: args.max_cost_usd.map(Some),
        max_tokens: set(args.max_tokens),
        period: args.period.clone().map(Some),
        requests_per_minute: set(args.rpm),
        tokens_per_minute: set(args.tpm),
        max_concurrent: set(args.max_concurrent),
    }
}

/// Prints limits one per line (`none` when there are none).
fn print_limits(whose: &str, limits: &Limits) {
    let view = LimitsView::from(limits);
    println!("{whose}");
    let lines = [
        (
            "requests_per_minute",
            view.requests_per_minute.map(|v| v.to_string()),
        ),
        (
            "tokens_per_minute",
            view.tokens_per_minute.map(|v| v.to_string()),
        ),
        ("max_tokens", view.max_tokens.map(|v| v.to_string())),
        ("max_cost_usd", view.max_cost_usd.map(|v| v.to_string())),
        ("period", view.period),
        ("max_concurrent", view.max_concurrent.map(|v| v.to_string())),
    ];
    let mut any = false;
    for (name, value) in lines {
        if let Some(value) = value {
            any = true;
            println!("  {name:<20} {value}");
        }
    }
    if !any {
        println!("  no limits");
    }
}

/// Applies `args` to `subject` (or only shows its limits when no flag is
/// given) and prints the limits.
async fn limits_of(
    store: &Store,
    project: &ProjectId,
    subject: &LimitSubject,
    args: &LimitsArgs,
) -> Result<Limits, ServiceError> {
    let patch = limits_patch(args);
    if !args.clear && patch == LimitsPatch::default() {
        return usage_limits::get(store, project, subject).await;
    }
    usage_limits::change(store, project, subject, &patch, args.clear).await
}

/// `keys limits ID [--project NAME] [--rpm N] [--tpm N] [--max-tokens N]
/// [--max-cost-usd USD] [--period P] [--max-concurrent N] [--clear]`.
pub(crate) async fn key_limits(
    config: &Config,
    project_name: &str,
    id: &str,
    args: &LimitsArgs,
) -> anyhow::Result<()> {
    let store = open(config).await?;
    let project = project(&store, project_name, false).await?;
    let subject = LimitSubject::Key(id.to_owned());
    match limits_of(&store, &project, &subject, args).await {
        Ok(limits) => print_limits(&format!("key {id}"), &limits),
        Err(ServiceError::NotFound { .. }) => bail!("no key {id:?} in project {project_name}"),
        Err(err) => return Err(err.into()),
    }
    Ok(())
}

/// `projects limits [--project NAME] [flags as keys limits]`.
pub(crate) async fn project_limits(
    config: &Config,
    project_name: &str,
    args: &LimitsArgs,
) -> anyhow::Result<()> {
    let store = open(config).await?;
    let project = project(&store, project_name, false).await?;
    let subject = LimitSubject::Project(project.as_str().to_owned());
    let limits = limits_of(&store, &project, &subject, args).await?;
    print_limits(&format!("project {project_name}"), &limits);
    Ok(())
}
