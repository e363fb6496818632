//! Throw-away PostgreSQL databases for tests and demo runs:
//! [`ScratchDb::create`] makes a database with a random name on the server
//! at [`server_url`] ([`ScratchDb::create_named`] on any server, with a
//! prefix of the caller's) and [`ScratchDb::drop_now`] drops it. There is no skipping: with no server
//! reachable, creation fails with a message saying how to start one.

use tokio_postgres::NoTls;

use crate::quote_ident;

/// Where tests find a PostgreSQL server (`SQSAGA_TEST_POSTGRES`).
pub const SERVER_VAR: &str = "SQSAGA_TEST_POSTGRES";

/// The machine's server: trust authentication for `postgres` on loopback.
pub const DEFAULT_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The administrative URL tests use: `$SQSAGA_TEST_POSTGRES`, else [`DEFAULT_SERVER`].
pub fn server_url() -> String {
    std::env::var(SERVER_VAR).ok().filter(|s| !s.trim().is_empty()).unwrap_or_else(|| DEFAULT_SERVER.to_string())
}

/// A database that exists for one test run.
#[derive(Debug)]
pub struct ScratchDb {
    /// Its name (`sqsaga_test_<random>`).
    pub name: String,
    /// A URL to it, for `PostgresDb::connect`.
    pub url: String,
    admin: String,
}

/// `url` with its database name replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[after_scheme..].find('/') {
        Some(slash) => &base[..after_scheme + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

async fn admin(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(|e| {
        format!(
            "no PostgreSQL server reachable at {} ({e}); the tests need one: on this kind of machine \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, elsewhere \
             `docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:15`, or set {SERVER_VAR} \
             to another server's URL (README, \"PostgreSQL\")",
            sqsaga_config::redact_url(url)
        )
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "Administrative PostgreSQL connection ended.");
        }
    });
    Ok(client)
}

impl ScratchDb {
    /// Creates a database with a random name on the server at [`server_url`].
    pub async fn create() -> Result<ScratchDb, String> {
        ScratchDb::create_on(&server_url()).await
    }

    /// Creates a database with a random name on the server at `admin_url`.
    pub async fn create_on(admin_url: &str) -> Result<ScratchDb, String> {
        ScratchDb::create_named(admin_url, "sqsaga_test").await
    }

    /// Creates a database named `<prefix>_<random>` on the server at
    /// `admin_url` (a URL to any database there, by a user allowed to create
    /// databases).
    pub async fn create_named(admin_url: &str, prefix: &str) -> Result<ScratchDb, String> {
        let client = admin(admin_url).await?;
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        client
            .batch_execute(&format!("CREATE DATABASE {}", quote_ident(&name)))
            .await
            .map_err(|e| format!("cannot create scratch database {name}: {e}"))?;
        Ok(ScratchDb { url: with_database(admin_url, &name), name, admin: admin_url.to_string() })
    }

    /// The database at `url` (created earlier, say by a demo run), to drop
    /// through the server at `admin_url`.
    pub fn existing(admin_url: &str, url: &str) -> Result<ScratchDb, String> {
        let config: tokio_postgres::Config = url.parse().map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
        let name =
            config.get_dbname().ok_or_else(|| format!("{} names no database", sqsaga_config::redact_url(url)))?;
        Ok(ScratchDb { name: name.to_string(), url: url.to_string(), admin: admin_url.to_string() })
    }

    /// Makes the database refuse new connections and ends the open ones
    /// (`down`), or accept them again: an outage without stopping the server.
    pub async fn outage(&self, down: bool) -> Result<(), String> {
        let client = admin(&self.admin).await?;
        let name = quote_ident(&self.name);
        client
            .batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS {}", !down))
            .await
            .map_err(|e| format!("cannot change connections to {}: {e}", self.name))?;
        if down {
            client
                .execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                    &[&self.name],
                )
                .await
                .map_err(|e| format!("cannot end the connections to {}: {e}", self.name))?;
        }
        Ok(())
    }

    /// Drops the database, ending any connection still open to it.
    pub async fn drop_now(self) -> Result<(), String> {
        let client = admin(&self.admin).await?;
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(&self.name)))
            .await
            .map_err(|e| format!("cannot drop scratch database {}: {e}", self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn with_database_replaces_only_the_path() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
        assert_eq!(with_database("postgres://h/db?sslmode=disable", "x"), "postgres://h/x?sslmode=disable");
    }
}
