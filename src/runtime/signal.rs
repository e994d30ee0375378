//! Signal names and numbers as `kill` takes them (CLI and API): `9`, `KILL`, `SIGKILL`, `sigkill`.

use nix::sys::signal::Signal;

pub fn parse(s: &str) -> Result<Signal, String> {
    let bad = || format!("unknown signal {s:?}");
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse("9"), Ok(Signal::SIGKILL));
        assert_eq!(parse("KILL"), Ok(Signal::SIGKILL));
        assert_eq!(parse("sigterm"), Ok(Signal::SIGTERM));
        assert_eq!(parse("SIGUSR1"), Ok(Signal::SIGUSR1));
        assert!(parse("SIGFOO").is_err());
        assert!(parse("0").is_err());
        assert!(parse("65").is_err());
    }
}
