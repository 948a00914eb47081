//! The operator report (`Master::report`, served as `/state`): what it says of agents,
//! frameworks, roles, tasks and offers.

use super::*;

#[test]
fn report_follows_the_books() {
    let (mut h, a, f, o, m) = one_agent_one_offer();
    let r = h.m.report(std::time::SystemTime::now());
    assert_eq!(r.agents.len(), 1);
    let agent = &r.agents[0];
    assert_eq!(agent.id, a.to_string());
    assert_eq!(agent.hostname, "host");
    assert!(agent.connected);
    assert_eq!(agent.total.cpus, 4.0);
    assert_eq!(agent.total.mem_bytes, 4 * GIB);
    assert_eq!(agent.offered.cpus, 4.0);
    assert_eq!(agent.attributes["rack"], "r1");
    assert_eq!(r.offers.len(), 1);
    assert_eq!(r.offers[0].framework_id, f.to_string());
    assert_eq!(r.frameworks[0].offers_held, 1);
    assert_eq!(r.frameworks[0].dominant_share, 1.0);

    h.accept(10, &[&o], vec![task("t1", &a, res(1.0, GIB), m)]);
    h.take();
    h.status(1, update(&f, "t1", &a, TaskState::Running, "u1"));
    h.take();
    let r = h.m.report(std::time::SystemTime::now());
    let t = r.tasks.iter().find(|t| t.id == "t1").unwrap();
    assert_eq!(t.state, "TASK_RUNNING");
    assert_eq!(t.agent_id, a.to_string());
    assert_eq!(t.resources.cpus, 1.0);
    assert!(!t.completed);
    assert_eq!(r.agents[0].used.cpus, 1.0);
    assert_eq!(r.agents[0].tasks, 1);
    let fw = &r.frameworks[0];
    assert_eq!(fw.tasks_by_state["TASK_RUNNING"], 1);
    assert_eq!(fw.role, "*");
    // The principal of its certificate, not what its FrameworkInfo claims.
    assert_eq!(fw.principal, "default");
    let role = r.roles.iter().find(|x| x.name == "*").unwrap();
    assert_eq!(role.frameworks, 1);
    assert_eq!(role.share, fw.dominant_share);
    assert_eq!(role.weight, 1.0);

    // Finished and acknowledged: among the completed tasks, and the agent is free.
    h.status(1, update(&f, "t1", &a, TaskState::Finished, "u2"));
    h.take();
    h.ack(10, &a, "t1", "u2");
    h.take();
    let r = h.m.report(std::time::SystemTime::now());
    let t = r.tasks.iter().find(|t| t.id == "t1").unwrap();
    assert_eq!(t.state, "TASK_FINISHED");
    assert!(t.completed);
    assert_eq!(r.agents[0].used.cpus, 0.0);
    assert_eq!(r.agents[0].tasks, 0);
    assert_eq!(r.tasks_by_state()["TASK_FINISHED"], 1);
    // Field names are an API.
    let json = serde_json::to_value(&r).unwrap();
    for key in [
        "allocator",
        "total",
        "agents",
        "frameworks",
        "roles",
        "tasks",
        "offers",
    ] {
        assert!(json.get(key).is_some(), "{key}");
    }
    assert_eq!(json["tasks"][0]["state"], "TASK_FINISHED");
    assert_eq!(json["agents"][0]["total"]["mem_bytes"], 4 * GIB);
}
