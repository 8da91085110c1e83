//! Throughput between two namespaces with iperf3 (`iperf3 -s -1` in one, `iperf3 -c
//! ... -J` in the other), and the table the datapath benchmark prints.

use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// Kills the iperf3 server on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Bits per second of a `secs`-second TCP stream from netns `client_ns` to `server_ip`
/// in netns `server_ns` (the receiver's figure, `end.sum_received`).
pub fn iperf3(
    server_ns: &str,
    server_ip: impl Into<IpAddr>,
    client_ns: &str,
    secs: u32,
    port: u16,
) -> Result<f64, String> {
    let ip = server_ip.into().to_string();
    let port_s = port.to_string();
    let mut server = Server(
        Command::new("ip")
            .args(["netns", "exec", server_ns, "iperf3", "-s", "-1", "-B", &ip])
            .args(["-p", &port_s])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("iperf3 -s: {e} (apt-get install iperf3)"))?,
    );
    super::wait_until("iperf3 server listening", Duration::from_secs(10), || {
        if let Ok(Some(st)) = server.0.try_wait() {
            return Ok(Err(format!("iperf3 -s exited: {st}")));
        }
        let out = crate::try_sh(
            "ip",
            &[
                "netns",
                "exec",
                server_ns,
                "ss",
                "-Hltn",
                &format!("sport = :{port}"),
            ],
        )?;
        if out.trim().is_empty() {
            Err("not yet".into())
        } else {
            Ok(Ok(()))
        }
    })??;
    let out = crate::try_sh(
        "ip",
        &[
            "netns",
            "exec",
            client_ns,
            "iperf3",
            "-c",
            &ip,
            "-p",
            &port_s,
            "-t",
            &secs.to_string(),
            "-J",
            "--connect-timeout",
            "5000",
        ],
    )?;
    let v: Value = serde_json::from_str(&out).map_err(|e| format!("iperf3 -J: {e}: {out}"))?;
    if let Some(e) = v["error"].as_str() {
        return Err(format!("iperf3: {e}"));
    }
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| format!("no end.sum_received.bits_per_second in {out}"))?;
    let _ = server.0.wait();
    Ok(bps)
}

/// The median of `v` (NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// One line of the table: what, median bits/s, and the underlay median it is compared to.
#[derive(Clone, Debug)]
pub struct Row {
    pub what: String,
    pub samples: Vec<f64>,
    pub baseline: Option<f64>,
}

/// The table: path, Gbit/s (median), samples, ratio to the underlay of the same run.
pub fn table(rows: &[Row]) -> String {
    let mut s = format!(
        "{:<34} {:>10} {:>8}  {}\n",
        "path", "Gbit/s", "ratio", "samples (Gbit/s)"
    );
    for r in rows {
        let m = median(&r.samples);
        let ratio = r
            .baseline
            .map(|b| format!("{:.2}", m / b))
            .unwrap_or_else(|| "-".into());
        let samples = r
            .samples
            .iter()
            .map(|x| format!("{:.2}", x / 1e9))
            .collect::<Vec<_>>()
            .join(" ");
        s += &format!("{:<34} {:>10.2} {:>8}  {samples}\n", r.what, m / 1e9, ratio);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
