//! Looking at the outcome with the system's tools: `ip -j`, `ping`, `nft -j`.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde_json::Value;

use crate::netns::Netns;
use crate::{sh, try_sh};

/// Global-scope addresses of `ifname` in `ns` (`ip -j addr`). Empty if no such link.
pub fn addrs(ns: &Netns, ifname: &str) -> Vec<IpNetwork> {
    let Ok(out) = try_sh(
        "ip",
        &["-n", ns.name(), "-j", "addr", "show", "dev", ifname],
    ) else {
        return vec![];
    };
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    let mut res = Vec::new();
    for link in v.as_array().into_iter().flatten() {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            if a["scope"].as_str() != Some("global") {
                continue;
            }
            let (Some(local), Some(len)) = (a["local"].as_str(), a["prefixlen"].as_u64()) else {
                continue;
            };
            if let Ok(n) = format!("{local}/{len}").parse() {
                res.push(n);
            }
        }
    }
    res
}

/// True when `ifname` exists in `ns`.
pub fn link_exists_in(ns: &Netns, ifname: &str) -> bool {
    try_sh("ip", &["-n", ns.name(), "link", "show", "dev", ifname]).is_ok()
}

/// True when the host has a link called `name`.
pub fn host_link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// The IPv4 routes of the main table of `ns` as `(dst, gateway, dev)` (`ip -j route`).
pub fn routes(ns: &Netns) -> Vec<(String, Option<String>, String)> {
    let out = sh("ip", &["-n", ns.name(), "-4", "-j", "route", "show"]);
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    v.as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["dst"].as_str().unwrap_or("").to_string(),
                r["gateway"].as_str().map(String::from),
                r["dev"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Pings `ip` from inside `ns` (up to 3 echo requests): true if any reply came back.
/// Only ever call it with addresses inside namespaces the test created.
pub fn ping(ns: &Netns, ip: IpAddr) -> bool {
    let ip = ip.to_string();
    ns.try_exec(&["ping", "-n", "-q", "-c", "3", "-i", "0.2", "-w", "3", &ip])
        .is_ok()
}

/// Removes `addr` (with prefix) from `ifname` in `ns`, by hand.
pub fn del_addr(ns: &Netns, ifname: &str, addr: &IpNetwork) {
    sh(
        "ip",
        &[
            "-n",
            ns.name(),
            "addr",
            "del",
            &addr.to_string(),
            "dev",
            ifname,
        ],
    );
}

/// One nftables rule, as `nft -j list ruleset` shows it.
#[derive(Clone, Debug)]
pub struct NftRule {
    pub family: String,
    pub table: String,
    pub chain: String,
    pub handle: u64,
    pub expr: Value,
    pub comment: Option<String>,
}

fn any_string(v: &Value, f: &dyn Fn(&str) -> bool) -> bool {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().any(|x| any_string(x, f)),
        Value::Object(o) => o.iter().any(|(k, x)| f(k) || any_string(x, f)),
        _ => false,
    }
}

impl NftRule {
    /// The rule has a `masquerade` statement.
    /// nft's own `masquerade` statement, or iptables-nft's `MASQUERADE` target (shown
    /// as `{"xt": {"type": "target", "name": "MASQUERADE"}}`).
    pub fn is_masquerade(&self) -> bool {
        any_string(&self.expr, &|s| s.eq_ignore_ascii_case("masquerade"))
    }

    /// The chain this rule jumps to or goes to, if any.
    pub fn jump_target(&self) -> Option<&str> {
        self.expr.as_array()?.iter().find_map(|e| {
            ["jump", "goto"]
                .iter()
                .find_map(|k| e[*k]["target"].as_str())
        })
    }
    /// Some match of the rule is on exactly `ip` (or `ip/32`).
    pub fn mentions_ip(&self, ip: IpAddr) -> bool {
        let s = ip.to_string();
        any_string(&self.expr, &|x| x == s || x == format!("{s}/32"))
            || prefix_addr_is(&self.expr, &s)
    }
    /// Some string of the rule starts with `prefix` (e.g. `10.213.7.`).
    pub fn mentions_prefix(&self, prefix: &str) -> bool {
        any_string(&self.expr, &|x| x.starts_with(prefix))
    }
}

fn prefix_addr_is(v: &Value, ip: &str) -> bool {
    match v {
        Value::Object(o) => {
            if let Some(p) = o.get("prefix") {
                if p["addr"].as_str() == Some(ip) && p["len"].as_u64() == Some(32) {
                    return true;
                }
            }
            o.values().any(|x| prefix_addr_is(x, ip))
        }
        Value::Array(a) => a.iter().any(|x| prefix_addr_is(x, ip)),
        _ => false,
    }
}

/// Every rule of the ruleset (`nft -j list ruleset`).
pub fn nft_rules() -> Result<Vec<NftRule>, String> {
    let out = try_sh("nft", &["-j", "list", "ruleset"])?;
    let v: Value = serde_json::from_str(&out).map_err(|e| format!("nft -j output: {e}"))?;
    let mut rules = Vec::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        let Some(r) = item.get("rule") else { continue };
        rules.push(NftRule {
            family: r["family"].as_str().unwrap_or("").into(),
            table: r["table"].as_str().unwrap_or("").into(),
            chain: r["chain"].as_str().unwrap_or("").into(),
            handle: r["handle"].as_u64().unwrap_or(0),
            expr: r["expr"].clone(),
            comment: r["comment"].as_str().map(String::from),
        });
    }
    Ok(rules)
}

/// The rules that masquerade traffic from `ip`: a rule matching on `ip` that either
/// masquerades itself or jumps to (`jump`/`goto`) a chain of the same table that does
/// (the reference plugin's shape).
pub fn masq_rules_for(ip: IpAddr) -> Vec<NftRule> {
    let rules = nft_rules().expect("nft -j list ruleset");
    masq_rules_matching(&rules, |r| r.mentions_ip(ip))
}

/// The rules of `rules` selected by `sel` that masquerade, directly or through a jump to
/// a chain with a masquerade rule.
pub fn masq_rules_matching(rules: &[NftRule], sel: impl Fn(&NftRule) -> bool) -> Vec<NftRule> {
    rules
        .iter()
        .filter(|r| sel(r))
        .filter(|r| r.is_masquerade() || jumps_to_masq(rules, r))
        .cloned()
        .collect()
}

fn jumps_to_masq(rules: &[NftRule], r: &NftRule) -> bool {
    let Some(t) = r.jump_target() else {
        return false;
    };
    rules
        .iter()
        .any(|x| x.family == r.family && x.table == r.table && x.chain == t && x.is_masquerade())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(chain: &str, expr: Value) -> NftRule {
        NftRule {
            family: "ip".into(),
            table: "t".into(),
            chain: chain.into(),
            handle: 1,
            expr,
            comment: None,
        }
    }

    #[test]
    fn finds_direct_and_jumped_masquerade() {
        let saddr = |ip: &str| json!({"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": ip}});
        let rules = vec![
            rule("post", json!([saddr("10.1.2.3"), {"masquerade": null}])),
            rule(
                "post",
                json!([saddr("10.1.2.4"), {"jump": {"target": "CNI-x"}}]),
            ),
            rule(
                "CNI-x",
                json!([{"xt": {"type": "target", "name": "MASQUERADE"}}]),
            ),
            rule("post", json!([saddr("10.1.2.5"), {"accept": null}])),
        ];
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        for (addr, n) in [
            ("10.1.2.3", 1),
            ("10.1.2.4", 1),
            ("10.1.2.5", 0),
            ("10.1.2.30", 0),
        ] {
            assert_eq!(
                masq_rules_matching(&rules, |r| r.mentions_ip(ip(addr))).len(),
                n,
                "{addr}"
            );
        }
    }
}
