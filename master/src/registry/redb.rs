//! The registry in an embedded [redb](https://docs.rs/redb) file, `{work_dir}/registry.redb`:
//! ACID, copy-on-write B-trees, each [`Registry::apply`] one write transaction committed with
//! redb's default (immediate, fsynced) durability before it returns.
//!
//! Tables (keys and values are bytes; values are postcard records, see
//! [`SCHEMA_VERSION`](super::SCHEMA_VERSION)): `meta` (`schema_version`), `frameworks` by id,
//! `agents` by id, `tasks` by (framework, task), `kills` (the tasks whose kill was requested,
//! same keys, no value), `removed_agents` and `removed_frameworks` (tombstones: the removed ids
//! by an increasing sequence number, so the oldest is the first row and is evicted first past
//! [`REMOVED_IDS_KEPT`]).

use super::{
    task_key, AgentRecord, FrameworkRecord, Registry, RegistryError, RegistryOp, Snapshot,
    TaskRecord, REMOVED_IDS_KEPT, SCHEMA_VERSION,
};
use proto::{AgentId, FrameworkId};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::{Path, PathBuf};

const META: TableDefinition<&str, u32> = TableDefinition::new("meta");
const FRAMEWORKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("frameworks");
const AGENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("agents");
const TASKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tasks");
const KILLS: TableDefinition<&[u8], ()> = TableDefinition::new("kills");
const ENDED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("ended");
const REMOVED_AGENTS: TableDefinition<u64, &str> = TableDefinition::new("removed_agents");
const REMOVED_FRAMEWORKS: TableDefinition<u64, &str> = TableDefinition::new("removed_frameworks");

/// The key of the schema version in `meta`.
const VERSION_KEY: &str = "schema_version";

/// The registry file's name under the master's work directory.
pub const FILE_NAME: &str = "registry.redb";

/// A registry stored in one redb file.
pub struct RedbRegistry {
    db: Database,
    path: PathBuf,
}

fn store_err<E>(what: &'static str) -> impl FnOnce(E) -> RegistryError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |e| RegistryError::Store {
        what,
        source: Box::new(e),
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("registry records always encode")
}

impl RedbRegistry {
    /// Opens (or creates) the registry at `path`, checking its schema version: a new file is
    /// stamped with this master's version; a newer one is refused.
    pub fn open(path: &Path) -> Result<Self, RegistryError> {
        let db = Database::create(path).map_err(store_err("open"))?;
        let txn = db.begin_write().map_err(store_err("begin"))?;
        {
            let mut meta = txn.open_table(META).map_err(store_err("open meta"))?;
            let found = meta
                .get(VERSION_KEY)
                .map_err(store_err("read schema version"))?
                .map(|v| v.value());
            match found {
                None => {
                    meta.insert(VERSION_KEY, SCHEMA_VERSION)
                        .map_err(store_err("write schema version"))?;
                }
                Some(v) if v == SCHEMA_VERSION => {}
                // Version 1 lacked the tombstone tables, version 2 the ended statuses (all
                // created below, empty).
                Some(1 | 2) => {
                    meta.insert(VERSION_KEY, SCHEMA_VERSION)
                        .map_err(store_err("write schema version"))?;
                }
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(RegistryError::NewerSchema {
                        found: v,
                        supported: SCHEMA_VERSION,
                    })
                }
                Some(v) => {
                    return Err(RegistryError::Store {
                        what: "check schema version",
                        source: format!(
                            "version {v} is older than {SCHEMA_VERSION} and has no migration"
                        )
                        .into(),
                    })
                }
            }
            // Every table exists from the start, so reads never meet a missing one.
            txn.open_table(FRAMEWORKS)
                .map_err(store_err("create tables"))?;
            txn.open_table(AGENTS).map_err(store_err("create tables"))?;
            txn.open_table(TASKS).map_err(store_err("create tables"))?;
            txn.open_table(KILLS).map_err(store_err("create tables"))?;
            txn.open_table(ENDED).map_err(store_err("create tables"))?;
            txn.open_table(REMOVED_AGENTS)
                .map_err(store_err("create tables"))?;
            txn.open_table(REMOVED_FRAMEWORKS)
                .map_err(store_err("create tables"))?;
        }
        txn.commit().map_err(store_err("commit"))?;
        Ok(Self {
            db,
            path: path.to_owned(),
        })
    }

    /// Opens (or creates) `{work_dir}/registry.redb`.
    pub fn open_in(work_dir: &Path) -> Result<Self, RegistryError> {
        Self::open(&work_dir.join(FILE_NAME))
    }

    /// The file it is stored in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Overwrites the schema version (for tests of the version check).
    #[doc(hidden)]
    pub fn set_schema_version_for_tests(&self, version: u32) -> Result<(), RegistryError> {
        let txn = self.db.begin_write().map_err(store_err("begin"))?;
        {
            let mut meta = txn.open_table(META).map_err(store_err("open meta"))?;
            meta.insert(VERSION_KEY, version)
                .map_err(store_err("write schema version"))?;
        }
        txn.commit().map_err(store_err("commit"))
    }

    /// Writes raw bytes into a record table (for tests of corrupt records).
    #[doc(hidden)]
    pub fn write_raw_for_tests(
        &self,
        table: &'static str,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), RegistryError> {
        let def = match table {
            "frameworks" => FRAMEWORKS,
            "agents" => AGENTS,
            _ => TASKS,
        };
        let txn = self.db.begin_write().map_err(store_err("begin"))?;
        {
            let mut t = txn.open_table(def).map_err(store_err("open table"))?;
            t.insert(key, value).map_err(store_err("write"))?;
        }
        txn.commit().map_err(store_err("commit"))
    }
}

/// Appends a tombstone after the newest one, evicting the oldest past [`REMOVED_IDS_KEPT`].
fn push_tombstone(
    table: &mut redb::Table<'_, u64, &'static str>,
    id: &str,
) -> Result<(), redb::StorageError> {
    let next = table.last()?.map_or(0, |(k, _)| k.value() + 1);
    table.insert(next, id)?;
    while table.len()? > REMOVED_IDS_KEPT as u64 {
        table.pop_first()?;
    }
    Ok(())
}

/// The ids in a tombstone table, oldest first.
fn read_tombstones(
    table: &impl ReadableTable<u64, &'static str>,
) -> Result<Vec<String>, RegistryError> {
    let mut out = Vec::new();
    for row in table.iter().map_err(store_err("read"))? {
        let (_, v) = row.map_err(store_err("read"))?;
        out.push(v.value().to_owned());
    }
    Ok(out)
}

fn decode_all<T: serde::de::DeserializeOwned>(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    name: &'static str,
) -> Result<Vec<T>, RegistryError> {
    let mut out = Vec::new();
    for row in table.iter().map_err(store_err("read"))? {
        let (_, v) = row.map_err(store_err("read"))?;
        out.push(
            postcard::from_bytes(v.value()).map_err(|source| RegistryError::Corrupt {
                table: name,
                source,
            })?,
        );
    }
    Ok(out)
}

impl Registry for RedbRegistry {
    fn load(&self) -> Result<Snapshot, RegistryError> {
        let txn = self.db.begin_read().map_err(store_err("begin read"))?;
        let frameworks = txn
            .open_table(FRAMEWORKS)
            .map_err(store_err("open table"))?;
        let agents = txn.open_table(AGENTS).map_err(store_err("open table"))?;
        let tasks = txn.open_table(TASKS).map_err(store_err("open table"))?;
        let kills = txn.open_table(KILLS).map_err(store_err("open table"))?;
        let ended = txn.open_table(ENDED).map_err(store_err("open table"))?;
        let removed_agents = read_tombstones(
            &txn.open_table(REMOVED_AGENTS)
                .map_err(store_err("open table"))?,
        )?
        .into_iter()
        .map(AgentId)
        .collect();
        let removed_frameworks = read_tombstones(
            &txn.open_table(REMOVED_FRAMEWORKS)
                .map_err(store_err("open table"))?,
        )?
        .into_iter()
        .map(FrameworkId)
        .collect();
        let mut frameworks: Vec<FrameworkRecord> = decode_all(&frameworks, "frameworks")?;
        let mut agents: Vec<AgentRecord> = decode_all(&agents, "agents")?;
        let mut tasks: Vec<TaskRecord> = decode_all(&tasks, "tasks")?;
        for t in &mut tasks {
            let key = task_key(&t.framework_id, &t.info.task_id);
            t.kill_requested = kills
                .get(key.as_slice())
                .map_err(store_err("read"))?
                .is_some();
            t.ended = match ended.get(key.as_slice()).map_err(store_err("read"))? {
                Some(v) => Some(postcard::from_bytes(v.value()).map_err(|source| {
                    RegistryError::Corrupt {
                        table: "ended",
                        source,
                    }
                })?),
                None => None,
            };
        }
        frameworks.sort_by(|a, b| a.id.cmp(&b.id));
        agents.sort_by(|a, b| a.id.cmp(&b.id));
        tasks.sort_by(|a, b| {
            (&a.framework_id, &a.info.task_id).cmp(&(&b.framework_id, &b.info.task_id))
        });
        Ok(Snapshot {
            frameworks,
            agents,
            tasks,
            removed_agents,
            removed_frameworks,
            blobs: Vec::new(),
        })
    }

    fn apply(&mut self, batch: &[RegistryOp]) -> Result<(), RegistryError> {
        if batch.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(store_err("begin"))?;
        {
            let mut frameworks = txn
                .open_table(FRAMEWORKS)
                .map_err(store_err("open table"))?;
            let mut agents = txn.open_table(AGENTS).map_err(store_err("open table"))?;
            let mut tasks = txn.open_table(TASKS).map_err(store_err("open table"))?;
            let mut kills = txn.open_table(KILLS).map_err(store_err("open table"))?;
            let mut ended = txn.open_table(ENDED).map_err(store_err("open table"))?;
            let mut removed_agents = txn
                .open_table(REMOVED_AGENTS)
                .map_err(store_err("open table"))?;
            let mut removed_frameworks = txn
                .open_table(REMOVED_FRAMEWORKS)
                .map_err(store_err("open table"))?;
            let w = store_err::<redb::StorageError>;
            for op in batch {
                match op {
                    RegistryOp::PutFramework(f) => {
                        frameworks
                            .insert(f.id.as_str().as_bytes(), encode(f).as_slice())
                            .map_err(w("write"))?;
                    }
                    RegistryOp::RemoveFramework(id) => {
                        frameworks
                            .remove(id.as_str().as_bytes())
                            .map_err(w("write"))?;
                        push_tombstone(&mut removed_frameworks, id.as_str()).map_err(w("write"))?;
                    }
                    RegistryOp::PutAgent(a) => {
                        agents
                            .insert(a.id.0.as_bytes(), encode(a).as_slice())
                            .map_err(w("write"))?;
                    }
                    RegistryOp::RemoveAgent(id) => {
                        agents.remove(id.0.as_bytes()).map_err(w("write"))?;
                        push_tombstone(&mut removed_agents, &id.0).map_err(w("write"))?;
                    }
                    RegistryOp::PutTask(t) => {
                        let key = task_key(&t.framework_id, &t.info.task_id);
                        let rec = TaskRecord {
                            kill_requested: false,
                            ended: None,
                            ..t.clone()
                        };
                        tasks
                            .insert(key.as_slice(), encode(&rec).as_slice())
                            .map_err(w("write"))?;
                    }
                    RegistryOp::RemoveTask {
                        framework_id,
                        task_id,
                    } => {
                        let key = task_key(framework_id, task_id);
                        tasks.remove(key.as_slice()).map_err(w("write"))?;
                        kills.remove(key.as_slice()).map_err(w("write"))?;
                        ended.remove(key.as_slice()).map_err(w("write"))?;
                    }
                    RegistryOp::EndTask {
                        framework_id,
                        task_id,
                        status,
                    } => {
                        let key = task_key(framework_id, task_id);
                        if tasks.get(key.as_slice()).map_err(w("read"))?.is_some() {
                            ended
                                .insert(key.as_slice(), encode(status).as_slice())
                                .map_err(w("write"))?;
                        }
                    }
                    RegistryOp::KillRequested {
                        framework_id,
                        task_id,
                    } => {
                        let key = task_key(framework_id, task_id);
                        if tasks.get(key.as_slice()).map_err(w("read"))?.is_some() {
                            kills.insert(key.as_slice(), ()).map_err(w("write"))?;
                        }
                    }
                    // A single master keeps blobs' owners beside the blob files.
                    RegistryOp::PutBlob { .. } | RegistryOp::RemoveBlob(_) => {}
                }
            }
        }
        txn.commit().map_err(store_err("commit"))
    }
}
