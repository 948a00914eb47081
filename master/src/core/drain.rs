//! An agent that stops on purpose (`AgentLeaving`): the master side of a drain.
//!
//! - `keep_tasks: true` (an upgrade, a planned restart): its offers are rescinded and it is not
//!   offered again; its tasks keep running and keep their states. A planned restart is not a
//!   partition: when the connection then closes, the tasks do not become TASK_UNREACHABLE. The
//!   agent has its usual re-registration timeout to come back under its id (its successor
//!   re-registers with the tasks it runs); past it, the tasks are TASK_GONE as for any agent that
//!   does not return.
//! - `keep_tasks: false`: the agent has killed its tasks and delivered their terminal updates;
//!   it is removed now, and any task still not terminal ends TASK_GONE (reason
//!   `AgentRestarted`).
//!
//! Either way the change is persisted before the agent is answered `AgentLeft`.

use super::{Binding, ConnId, Master};
use crate::registry::RegistryOp;
use proto::{Message, Reason};

impl Master {
    pub(super) fn on_agent_leaving(&mut self, conn: ConnId, keep_tasks: bool) {
        let Some(Binding::Agent(aid)) = self.binding(conn) else {
            return self.close(conn, "protocol violation: AgentLeaving before Register");
        };
        if !self.agents.contains_key(&aid) {
            // Removed already (answered once before): nothing more to record.
            self.send(conn, Message::AgentLeft);
            return;
        }
        if keep_tasks {
            tracing::info!(agent = %aid, "agent leaving; its tasks stay for its successor");
            self.rescind_agent_offers(&aid);
            if let Some(a) = self.agents.get_mut(&aid) {
                a.leaving = true;
            }
            // Its resources are no longer offered; the others' round may use what it frees.
            self.schedule_allocation();
            // Nothing the registry keeps changes (the agent and its tasks stay), but the
            // record is rewritten so the answer follows a durable write like every other.
            if let Some(record) = self.agent_record(&aid) {
                self.persist(RegistryOp::PutAgent(record));
            }
        } else {
            tracing::info!(agent = %aid, "agent leaving without its tasks; removing it");
            self.remove_agent_because(
                &aid,
                Reason::AgentRestarted,
                format!("agent {aid} was drained and left without reporting the task's end"),
            );
            // The connection speaks for no agent any more.
            if let Some(c) = self.conns.get_mut(&conn) {
                c.bound = None;
            }
        }
        self.send(conn, Message::AgentLeft);
    }
}
