//! The one message enum every Tessera peer speaks, modelled on Mesos's v1 scheduler and agent
//! APIs so that a Mesos-compatible HTTP front end stays a translation, not a rewrite.
//!
//! Every connection opens a bidirectional *control stream* whose first frame is [`Message::Hello`]
//! stating the protocol version and the peer's role; the master answers [`Message::HelloAck`] or
//! closes the connection. Blobs (modules, task files) travel on streams of their own, each opened
//! with [`Message::UploadBlob`] or [`Message::FetchBlob`], so bulk bytes never delay control
//! messages.

use crate::ids::{AgentId, Digest, ExecutorId, FrameworkId, OfferId, TaskId, UpdateId};
use crate::resources::Resources;
use serde::{Deserialize, Serialize};

/// The version of this protocol; peers of another version are refused at the handshake.
/// Version 5 added [`Message::AgentQuery`] and [`Message::AgentAnswer`] (an agent of version 4
/// could not decode a query and would drop its link).
pub const PROTOCOL_VERSION: u32 = 5;

/// What a peer is, stated in its handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum Role {
    /// A worker machine running tasks.
    Agent,
    /// A framework's scheduler (through the SDK) or the CLI.
    Scheduler,
    /// A standby master mirroring the leader's blobs (master certificates only).
    Standby,
}

/// Describes a framework when it subscribes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct FrameworkInfo {
    /// Human-readable name.
    pub name: String,
    /// The role whose share the framework draws on.
    pub role: String,
    /// Who runs it (for quotas and audit); defaults to the certificate's subject in logs.
    pub principal: String,
    /// Set when re-subscribing after a disconnection, to get the same framework back.
    pub id: Option<FrameworkId>,
    /// How long the master keeps a disconnected framework's tasks before tearing it down.
    pub failover_timeout_ms: u64,
    /// Rank under the strict-priority allocator: higher is offered first (default 0).
    #[serde(default)]
    pub priority: i32,
}

/// Describes an agent when it registers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct AgentInfo {
    /// The machine's name.
    pub hostname: String,
    /// What it offers in total, reserved and unreserved together.
    pub resources: Resources,
    /// Static reservations: the parts of `resources` set aside for a role, offered only to
    /// frameworks of that role (`--resources "cpus(analytics):2;mem(analytics):2GiB;..."`).
    #[serde(default)]
    pub reservations: Vec<(String, Resources)>,
    /// Free-form key/value attributes (rack, zone...), passed to schedulers in offers.
    pub attributes: Vec<(String, String)>,
    /// Names of the data sets the agent holds (`tessera agent --dataset NAME=PATH`): a task
    /// asking for one sees it read-only at `/data/NAME`. Advertised in offers, so that
    /// frameworks can prefer the agents holding their data (delay scheduling).
    #[serde(default)]
    pub datasets: Vec<String>,
}

/// Resources of one agent offered to one framework.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Offer {
    /// Names the offer in accept and decline calls.
    pub id: OfferId,
    /// The framework it is for.
    pub framework_id: FrameworkId,
    /// The agent whose resources these are.
    pub agent_id: AgentId,
    /// That agent's hostname.
    pub hostname: String,
    /// The offered resources.
    pub resources: Resources,
    /// `Some(role)` when these resources are reserved for that role, `None` when unreserved.
    #[serde(default)]
    pub reserved_for: Option<String>,
    /// The agent's attributes.
    pub attributes: Vec<(String, String)>,
    /// The data sets the agent holds ([`AgentInfo::datasets`]).
    #[serde(default)]
    pub datasets: Vec<String>,
}

/// A file placed in a task's sandbox before it starts, like the Mesos fetcher's URIs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct TaskFile {
    /// Path relative to the sandbox root (no `..`, not absolute).
    pub path: String,
    /// The uploaded blob with its contents.
    pub digest: Digest,
}

/// A task to launch: a WASI command module run with args and env inside a share of an agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct TaskInfo {
    /// Unique within the framework.
    pub task_id: TaskId,
    /// Human-readable name; also the guest's argv[0].
    pub name: String,
    /// The agent to run on (that of the accepted offers).
    pub agent_id: AgentId,
    /// The share it runs in.
    pub resources: Resources,
    /// The module to run (uploaded beforehand).
    pub module: Digest,
    /// Arguments after argv[0].
    pub args: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Files to place in the sandbox.
    pub files: Vec<TaskFile>,
    /// Wall-clock limit from the start of the guest, if any.
    pub timeout_ms: Option<u64>,
    /// CPU-time budget in milliseconds of one core (counted in fuel), if any.
    #[serde(default)]
    pub max_cpu_ms: Option<u64>,
    /// Data sets of the agent the task reads, each preopened read-only at `/data/NAME`; an
    /// accept naming a data set the offer's agent lacks is refused.
    #[serde(default)]
    pub datasets: Vec<String>,
    /// Run by this executor of the framework instead of as a one-shot command: the first such
    /// task on an agent starts the executor, later ones go to the running instance. `module`
    /// must then equal the executor's module.
    #[serde(default)]
    pub executor: Option<ExecutorInfo>,
    /// Opaque bytes handed to the executor with the task (Mesos's `TaskInfo.data`), at most
    /// [`MAX_TASK_DATA`]; unused by one-shot tasks.
    #[serde(default)]
    pub data: Vec<u8>,
}

/// The largest [`TaskInfo::data`] accepted.
pub const MAX_TASK_DATA: usize = 64 * 1024;

/// The largest framework message ([`Message::FrameworkMessage`], [`Message::ExecutorMessage`])
/// accepted; bigger payloads belong in blobs. Delivery is at most once, as in Mesos.
pub const MAX_FRAMEWORK_MESSAGE: usize = 64 * 1024;

/// A framework's long-lived guest on an agent: a WASI 0.2 component of the `tessera:executor`
/// world that receives its framework's tasks, kills, messages and a shutdown, and reports task
/// states and messages back. Its envelope is its own `resources` plus those of its live tasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct ExecutorInfo {
    /// Unique within the framework; one instance per (agent, framework, executor id).
    pub executor_id: ExecutorId,
    /// Human-readable name; also the guest's argv[0].
    pub name: String,
    /// The component to run (uploaded beforehand).
    pub module: Digest,
    /// The executor's own share, charged once per agent on top of its tasks'.
    pub resources: Resources,
    /// Arguments after argv[0].
    pub args: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Stops the executor after this long with no live task (default: the agent's, 60 s).
    pub idle_timeout_ms: Option<u64>,
    /// How long a kill may go unanswered before the agent ends the task itself (default 5 s).
    pub kill_grace_ms: Option<u64>,
}

/// An executor the agent still runs, reported when it re-registers so that the master charges
/// its resources again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct RunningExecutor {
    /// Its framework.
    pub framework_id: FrameworkId,
    /// The executor as first launched.
    pub info: ExecutorInfo,
}

/// The states of a task's life, as in Mesos.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum TaskState {
    /// Accepted by the master, on its way to the agent.
    Staging,
    /// The agent is fetching and preparing the module and files.
    Starting,
    /// The guest runs.
    Running,
    /// Exited with code 0.
    Finished,
    /// Exited non-zero, trapped, or hit a limit.
    Failed,
    /// Killed at the framework's request.
    Killed,
    /// The agent was lost; the task's fate is unknown.
    Lost,
    /// Rejected as invalid at accept.
    Error,
    /// Could not be delivered to an agent (offer no longer valid, agent gone).
    Dropped,
    /// The agent's connection dropped: the task probably still runs there, and returns to its
    /// real state if the agent re-registers within the master's re-registration timeout. Not
    /// terminal (Mesos's TASK_UNREACHABLE).
    Unreachable,
    /// The agent was removed after it failed to re-register in time; were it to come back it
    /// would be told to kill the task. Terminal (Mesos's TASK_GONE).
    Gone,
}

impl TaskState {
    /// True for the states a task never leaves.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Finished
                | TaskState::Failed
                | TaskState::Killed
                | TaskState::Lost
                | TaskState::Error
                | TaskState::Dropped
                | TaskState::Gone
        )
    }

    /// The Mesos spelling (`TASK_FINISHED`), for logs and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Staging => "TASK_STAGING",
            TaskState::Starting => "TASK_STARTING",
            TaskState::Running => "TASK_RUNNING",
            TaskState::Finished => "TASK_FINISHED",
            TaskState::Failed => "TASK_FAILED",
            TaskState::Killed => "TASK_KILLED",
            TaskState::Lost => "TASK_LOST",
            TaskState::Error => "TASK_ERROR",
            TaskState::Dropped => "TASK_DROPPED",
            TaskState::Unreachable => "TASK_UNREACHABLE",
            TaskState::Gone => "TASK_GONE",
        }
    }
}

/// Why a task reached the state it is in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum Reason {
    /// The guest exited with this code.
    ExitCode(i32),
    /// The guest trapped (message from wasmtime).
    Trap(String),
    /// The guest ran out of its memory share.
    MemoryLimit,
    /// The guest used up its CPU-time budget.
    CpuLimit,
    /// The sandbox outgrew the task's disk share.
    DiskLimit,
    /// The wall-clock timeout passed.
    Timeout,
    /// Killed at the framework's request.
    Killed,
    /// The agent was lost or removed.
    AgentLost,
    /// The agent restarted and no longer knows the task.
    AgentRestarted,
    /// The module or a file could not be fetched or was corrupt.
    FetchFailed,
    /// The module failed to load (invalid, no `_start`, ...).
    ModuleInvalid,
    /// The task description was invalid (resources, ids, files).
    TaskInvalid,
    /// The offers named were unknown, stale, or someone else's.
    InvalidOffers,
    /// The framework was torn down.
    FrameworkRemoved,
    /// The agent could not run the task (sandbox, disk...).
    AgentError,
    /// The task's executor ended (trap, exit, outgrown envelope, killed) before the task did.
    ExecutorTerminated(String),
    /// The task's executor reported this state itself (finished or failed); its message says
    /// why.
    ExecutorReported,
    /// The agent's connection dropped; it may still come back within the re-registration
    /// timeout.
    AgentUnreachable,
    /// The agent's runtime process (where its guests run, outliving agent restarts) died
    /// while the agent was away, and the task with it: what it did after the agent's last
    /// checkpoint is unknown.
    RuntimeLost,
}

/// A task's status as reported to its scheduler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct TaskStatus {
    /// The task.
    pub task_id: TaskId,
    /// Its framework.
    pub framework_id: FrameworkId,
    /// Where it runs (absent when it never reached an agent).
    pub agent_id: Option<AgentId>,
    /// The new state.
    pub state: TaskState,
    /// Why, for terminal states.
    pub reason: Option<Reason>,
    /// A human-readable explanation.
    pub message: String,
    /// The last few KiB of the guest's stdout.
    pub stdout_tail: String,
    /// The last few KiB of the guest's stderr.
    pub stderr_tail: String,
    /// Set when the update comes from an agent and must be acknowledged.
    pub uuid: Option<UpdateId>,
}

/// Refuse filters, as Mesos's `Filters`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct Filters {
    /// How long the master should not offer the declined agent's resources to this framework.
    pub refuse_seconds: f64,
}

impl Default for Filters {
    /// Mesos's default: five seconds.
    fn default() -> Self {
        Filters {
            refuse_seconds: 5.0,
        }
    }
}

/// What a blob is for, which decides how it is validated on upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum BlobKind {
    /// A WebAssembly module: validated before it is stored.
    Module,
    /// Any file for a task's sandbox.
    File,
}

/// A task the agent still runs, reported when it re-registers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub struct RunningTask {
    /// Its framework.
    pub framework_id: FrameworkId,
    /// The task as launched.
    pub task: TaskInfo,
    /// Its latest state on the agent.
    pub state: TaskState,
}

/// Every message of the protocol.
// `RunTask` (a whole `TaskInfo`) is the largest; a message is moved from the parser to its
// handler once, so boxing it would cost an allocation for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum Message {
    // ----- handshake (first frame of a control stream) -----
    /// Opens a control stream: the peer's protocol version and role.
    Hello {
        /// Must equal [`PROTOCOL_VERSION`].
        version: u32,
        /// What the peer is.
        role: Role,
    },
    /// The master accepts the handshake.
    HelloAck {
        /// The master's protocol version.
        version: u32,
    },

    // ----- scheduler -> master -----
    /// Registers (or re-attaches) a framework.
    Subscribe {
        /// The framework.
        framework: FrameworkInfo,
    },
    /// Uses offers (all of one agent) to launch tasks; what is left returns to the pool.
    Accept {
        /// The offers used.
        offer_ids: Vec<OfferId>,
        /// The tasks to launch.
        tasks: Vec<TaskInfo>,
        /// Applies to the unused remainder.
        filters: Filters,
    },
    /// Returns offers unused.
    Decline {
        /// The offers.
        offer_ids: Vec<OfferId>,
        /// How long not to re-offer those agents to this framework.
        filters: Filters,
    },
    /// Clears this framework's filters and resumes offers.
    Revive,
    /// Stops offers to this framework until it revives.
    Suppress,
    /// Kills one of the framework's tasks.
    Kill {
        /// The task.
        task_id: TaskId,
    },
    /// Acknowledges a status update, so the agent stops resending it.
    Acknowledge {
        /// Where the task runs.
        agent_id: AgentId,
        /// The task.
        task_id: TaskId,
        /// The update.
        uuid: UpdateId,
    },
    /// Asks the master for the latest known state of these tasks (all when empty).
    Reconcile {
        /// The tasks.
        task_ids: Vec<TaskId>,
    },
    /// Ends the framework: kills its tasks and forgets it.
    Teardown,

    // ----- master -> scheduler -----
    /// The framework is registered.
    Subscribed {
        /// Its id.
        framework_id: FrameworkId,
        /// How often the master sends heartbeats.
        heartbeat_interval_ms: u64,
    },
    /// New resource offers.
    Offers {
        /// The offers.
        offers: Vec<Offer>,
    },
    /// An offer is no longer valid.
    Rescind {
        /// The offer.
        offer_id: OfferId,
    },
    /// A task's status changed.
    Update {
        /// The status.
        status: TaskStatus,
    },
    /// A call failed; the connection stays open.
    Error {
        /// What went wrong.
        message: String,
    },
    /// Liveness signal from the master.
    Heartbeat,

    // ----- agent <-> master -----
    /// An agent (re-)registers.
    Register {
        /// Set when re-registering, to keep the same id.
        agent_id: Option<AgentId>,
        /// The agent.
        info: AgentInfo,
        /// Tasks it still runs.
        running: Vec<RunningTask>,
        /// Executors it still runs.
        #[serde(default)]
        executors: Vec<RunningExecutor>,
    },
    /// The master admitted the agent.
    Registered {
        /// Its id.
        agent_id: AgentId,
    },
    /// The master refuses the agent (e.g. its id was removed); it must start afresh.
    Shutdown {
        /// Why.
        message: String,
    },
    /// Runs a task.
    RunTask {
        /// The task's framework.
        framework_id: FrameworkId,
        /// The task.
        task: TaskInfo,
    },
    /// Kills a task.
    KillTask {
        /// The task's framework.
        framework_id: FrameworkId,
        /// The task.
        task_id: TaskId,
    },
    /// A status update from the agent, resent until acknowledged.
    StatusUpdate {
        /// The status, with its uuid.
        status: TaskStatus,
    },
    /// The scheduler acknowledged an update.
    StatusUpdateAck {
        /// The task's framework.
        framework_id: FrameworkId,
        /// The task.
        task_id: TaskId,
        /// The update.
        uuid: UpdateId,
    },

    // ----- blob streams -----
    /// Opens an upload stream: `size` raw bytes follow the frame.
    UploadBlob {
        /// The content's sha256, checked on arrival.
        digest: Digest,
        /// What it is.
        kind: BlobKind,
        /// Its length.
        size: u64,
    },
    /// Opens a fetch stream.
    FetchBlob {
        /// The blob wanted.
        digest: Digest,
    },
    /// Answers a blob stream: stored (upload) or `size` raw bytes follow (fetch).
    BlobOk {
        /// The blob's size.
        size: u64,
    },
    /// Answers a blob stream with a failure.
    BlobError {
        /// Why.
        message: String,
    },

    // ----- operator -> master, and its answer -----
    /// Tears down any framework: allowed only to an operator certificate.
    TeardownFramework {
        /// The framework.
        framework_id: FrameworkId,
    },
    /// The framework named in `TeardownFramework` is torn down (its tasks are being killed).
    TornDown {
        /// The framework.
        framework_id: FrameworkId,
    },

    // ----- executors -----
    /// Scheduler -> master: bytes for the framework's executor on an agent; master ->
    /// scheduler: bytes from that executor. At most once, at most [`MAX_FRAMEWORK_MESSAGE`].
    FrameworkMessage {
        /// Where the executor runs.
        agent_id: AgentId,
        /// The executor.
        executor_id: ExecutorId,
        /// The payload.
        data: Vec<u8>,
    },
    /// Master -> agent: bytes for an executor; agent -> master: bytes from an executor to its
    /// scheduler. The master checks the framework owns the executor.
    ExecutorMessage {
        /// The executor's framework.
        framework_id: FrameworkId,
        /// The executor.
        executor_id: ExecutorId,
        /// The payload.
        data: Vec<u8>,
    },
    /// Scheduler -> master: stop the framework's executor on an agent (its live tasks are
    /// killed first).
    ShutdownExecutor {
        /// Where it runs.
        agent_id: AgentId,
        /// The executor.
        executor_id: ExecutorId,
    },
    /// Master -> agent: stop an executor (shutdown event, then forcibly after the grace).
    KillExecutor {
        /// Its framework.
        framework_id: FrameworkId,
        /// The executor.
        executor_id: ExecutorId,
    },
    /// Agent -> master -> scheduler: an executor ended; its resources are free again. Sent at
    /// most once (as Mesos's executor-exited event); the task updates that follow are reliable.
    ExecutorExited {
        /// Its framework.
        framework_id: FrameworkId,
        /// Where it ran (set by the master from the agent's connection).
        agent_id: AgentId,
        /// The executor.
        executor_id: ExecutorId,
        /// False after a shutdown asked for or an idle stop; true after a trap, an unasked
        /// exit, an outgrown envelope or a forced kill.
        failed: bool,
        /// What happened (trap message, exit code, limit).
        message: String,
    },
    /// Agent -> master: the agent is stopping on purpose (SIGTERM, SIGINT, an upgrade). Its
    /// resources stop being offered at once. With `keep_tasks`, its tasks and executors keep
    /// running in the agent's runtime process and a successor will re-register under the same
    /// agent id (the master keeps them as they are until the re-registration timeout);
    /// without, the agent has killed its tasks and delivered their terminal updates, and the
    /// master removes it. Answered with [`Message::AgentLeft`].
    AgentLeaving {
        /// Whether the tasks keep running for a successor.
        keep_tasks: bool,
    },
    /// Master -> agent: the [`Message::AgentLeaving`] is recorded; the agent may close.
    AgentLeft,
    /// Standby master -> any peer, in answer to a [`Message::Hello`]: this master does not lead,
    /// so the peer should dial `leader` (the leader's advertised `host:port`), or, while nobody
    /// leads (`None`), try again shortly. The standby serves nothing else on the connection.
    /// Appended last so the postcard indices of the older variants stay as they were.
    NotLeader {
        /// The current leader's advertised address, if this master knows one.
        leader: Option<String>,
    },
    // ----- operator reads through the master (task output, agent metrics) -----
    /// Master -> agent: a question an operator (or a framework, about its own tasks) asked the
    /// master about this agent; answered with [`Message::AgentAnswer`] carrying the same
    /// `request_id`. Appended after the older variants so their postcard indices stay.
    AgentQuery {
        /// Chosen by the master; echoed in the answer.
        request_id: u64,
        /// What is asked.
        query: AgentQuery,
    },
    /// Agent -> master: the answer to the [`Message::AgentQuery`] of the same `request_id`.
    AgentAnswer {
        /// The query's id.
        request_id: u64,
        /// What the agent found.
        answer: AgentAnswer,
    },
}

/// The most bytes one output read returns (a larger `length` is capped to it), so that an
/// answer always fits in one control frame with room to spare.
pub const MAX_OUTPUT_READ: u32 = 512 * 1024;

/// Which of a task's output streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum OutputStream {
    /// The guest's standard output.
    Stdout,
    /// The guest's standard error.
    Stderr,
}

impl OutputStream {
    /// `"stdout"` or `"stderr"`, as in URLs and file names.
    pub fn name(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        }
    }
}

/// What the master asks an agent on behalf of a caller (see [`Message::AgentQuery`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum AgentQuery {
    /// Bytes of a task's stdout or stderr, as Mesos's `/files/read`: at most `length`
    /// (capped to [`MAX_OUTPUT_READ`]) from `offset`, for a running task or an ended one whose
    /// sandbox is still there.
    Output {
        /// The task's framework.
        framework_id: FrameworkId,
        /// The task.
        task_id: TaskId,
        /// Which stream.
        stream: OutputStream,
        /// Where to start reading.
        offset: u64,
        /// How many bytes at most.
        length: u32,
    },
    /// The agent's metrics, in the Prometheus text exposition format.
    Metrics,
}

/// An agent's answer to an [`AgentQuery`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(proptest_derive::Arbitrary))]
pub enum AgentAnswer {
    /// Output bytes.
    Output {
        /// The bytes read (empty at or past the end).
        data: Vec<u8>,
        /// How many bytes the stream holds so far.
        size: u64,
        /// The task has ended: the stream will not grow any more.
        ended: bool,
    },
    /// The metrics text.
    Metrics {
        /// Prometheus text exposition.
        text: String,
    },
    /// The agent does not know the task (never ran here, or its sandbox was collected).
    UnknownTask,
    /// The read failed on the agent (the file is gone, an I/O error): why.
    Failed {
        /// For humans.
        message: String,
    },
}

impl Message {
    /// The answer to one offer a scheduler has packed tasks into: `Accept` when it launches
    /// something, `Decline` (with the same filters for the whole offer) when it does not.
    pub fn answer_offer(offer_id: OfferId, tasks: Vec<TaskInfo>, filters: Filters) -> Message {
        if tasks.is_empty() {
            Message::Decline {
                offer_ids: vec![offer_id],
                filters,
            }
        } else {
            Message::Accept {
                offer_ids: vec![offer_id],
                tasks,
                filters,
            }
        }
    }

    /// The variant's name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "Hello",
            Message::HelloAck { .. } => "HelloAck",
            Message::Subscribe { .. } => "Subscribe",
            Message::Accept { .. } => "Accept",
            Message::Decline { .. } => "Decline",
            Message::Revive => "Revive",
            Message::Suppress => "Suppress",
            Message::Kill { .. } => "Kill",
            Message::Acknowledge { .. } => "Acknowledge",
            Message::Reconcile { .. } => "Reconcile",
            Message::Teardown => "Teardown",
            Message::TeardownFramework { .. } => "TeardownFramework",
            Message::TornDown { .. } => "TornDown",
            Message::Subscribed { .. } => "Subscribed",
            Message::Offers { .. } => "Offers",
            Message::Rescind { .. } => "Rescind",
            Message::Update { .. } => "Update",
            Message::Error { .. } => "Error",
            Message::Heartbeat => "Heartbeat",
            Message::Register { .. } => "Register",
            Message::Registered { .. } => "Registered",
            Message::Shutdown { .. } => "Shutdown",
            Message::RunTask { .. } => "RunTask",
            Message::KillTask { .. } => "KillTask",
            Message::StatusUpdate { .. } => "StatusUpdate",
            Message::StatusUpdateAck { .. } => "StatusUpdateAck",
            Message::UploadBlob { .. } => "UploadBlob",
            Message::FetchBlob { .. } => "FetchBlob",
            Message::BlobOk { .. } => "BlobOk",
            Message::BlobError { .. } => "BlobError",
            Message::FrameworkMessage { .. } => "FrameworkMessage",
            Message::ExecutorMessage { .. } => "ExecutorMessage",
            Message::ShutdownExecutor { .. } => "ShutdownExecutor",
            Message::KillExecutor { .. } => "KillExecutor",
            Message::ExecutorExited { .. } => "ExecutorExited",
            Message::AgentLeaving { .. } => "AgentLeaving",
            Message::AgentLeft => "AgentLeft",
            Message::NotLeader { .. } => "NotLeader",
            Message::AgentQuery { .. } => "AgentQuery",
            Message::AgentAnswer { .. } => "AgentAnswer",
        }
    }
}
