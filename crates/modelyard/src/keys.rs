//! `modelyard keys`: API keys, managed directly in the database named by the
//! config (so the first admin key can be made before the server requires
//! one). The server notices new and revoked keys within seconds.

use anyhow::{bail, Context};
use modelyard_server::config::Config;
use modelyard_server::service::error::ServiceError;
use modelyard_store::{ProjectId, Role, Store};

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
