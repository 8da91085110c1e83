//! `ipam.resolvConf`: a resolv.conf-style file turned into the result's `dns`.

use cni_core::spec::result::Dns;
use std::path::Path;

use crate::error::IpamError;

/// Reads `nameserver`, `domain`, `search` and `options` lines; `#`/`;` start comments.
pub(crate) fn parse(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_whitespace();
        let Some(keyword) = words.next() else {
            continue;
        };
        match keyword {
            "nameserver" => dns.nameservers.extend(words.next().map(str::to_string)),
            "domain" => dns.domain = words.next().map(str::to_string),
            "search" => dns.search = words.map(str::to_string).collect(),
            "options" => dns.options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    dns
}

/// Reads and parses the file; a missing or unreadable file is an error naming it.
pub(crate) fn load(path: &Path) -> Result<Dns, IpamError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        IpamError::config(format!(
            "ipam.resolvConf: cannot read {}: {e}",
            path.display()
        ))
    })?;
    Ok(parse(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_keyword() {
        let d = parse(
            "# comment\nnameserver 10.0.0.53\nnameserver fd00::53 # x\n\
             domain example.com\nsearch a.example b.example\noptions ndots:2 edns0\nsortlist 1.2.3.4\n",
        );
        assert_eq!(d.nameservers, vec!["10.0.0.53", "fd00::53"]);
        assert_eq!(d.domain.as_deref(), Some("example.com"));
        assert_eq!(d.search, vec!["a.example", "b.example"]);
        assert_eq!(d.options, vec!["ndots:2", "edns0"]);
    }

    #[test]
    fn missing_file_names_it() {
        let e = load(Path::new("/nonexistent/resolv.conf")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/resolv.conf"));
        assert_eq!(e.code(), 7);
    }
}
