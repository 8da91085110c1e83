//! Shared by the node-local store tests (`cli`, `safety`): reading the store's entries the
//! way the store itself does.

/// The attachment (`key-<cid>+<ifname>`) an address entry names: its target is the
/// owner's record (JSON, this build) or the owner's key entry name (earlier builds).
pub fn entry_owner(path: &std::path::Path) -> String {
    let t = std::fs::read_link(path).unwrap();
    let t = t.to_str().unwrap();
    if t.starts_with('{') {
        let rec: serde_json::Value = serde_json::from_str(t).unwrap();
        format!(
            "key-{}+{}",
            rec["containerID"].as_str().unwrap(),
            rec["ifname"].as_str().unwrap()
        )
    } else {
        t.to_string()
    }
}
