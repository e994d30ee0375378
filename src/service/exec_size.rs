//! What execve(2) takes: a program's arguments and environment are checked at the edge,
//! so that a request whose process could never be executed is a 400 that names the
//! field and the limit, not a container that fails with E2BIG at start.

/// The most bytes one argument or environment string may hold: the kernel's
/// `MAX_ARG_STRLEN` (32 pages) counts the terminating NUL.
pub const MAX_STRING_BYTES: usize = 32 * 4096 - 1;

/// The most bytes the arguments and environment may take together, each string with its
/// NUL and its pointer. execve allows a quarter of the stack limit (2 MiB under the
/// usual 8 MiB); half of that leaves room for what the service adds and for the
/// program's own stack.
pub const MAX_TOTAL_BYTES: usize = 1 << 20;

/// One list of strings and the field it came from (`process.args`, `steps[2].args`).
pub type Strings<'a> = (&'a str, &'a [String]);

/// Checks that `lists` (a process's arguments and environment) fit execve(2).
pub fn check(lists: &[Strings<'_>]) -> Result<(), String> {
    let mut total = 0usize;
    for (field, strings) in lists {
        for (i, s) in strings.iter().enumerate() {
            if s.len() > MAX_STRING_BYTES {
                return Err(format!(
                    "{field}[{i}]: {} bytes, more than the {MAX_STRING_BYTES} that execve takes in one string",
                    s.len()
                ));
            }
            total += s.len() + 1 + std::mem::size_of::<usize>();
        }
    }
    if total > MAX_TOTAL_BYTES {
        let fields: Vec<&str> = lists.iter().map(|(f, _)| *f).collect();
        return Err(format!(
            "{}: {total} bytes together, more than the {MAX_TOTAL_BYTES} allowed (execve's limit)",
            fields.join(" and ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_totals_are_bounded_with_the_field_named() {
        let ok = vec!["x".repeat(MAX_STRING_BYTES)];
        assert!(check(&[("process.args", &ok)]).is_ok());
        let long = vec!["a".into(), "x".repeat(MAX_STRING_BYTES + 1)];
        let e = check(&[("process.args", &long)]).unwrap_err();
        assert!(e.starts_with("process.args[1]: "), "{e}");
        let many: Vec<String> = (0..20).map(|_| "y".repeat(100_000)).collect();
        let e = check(&[("process.args", &[]), ("process.env", &many)]).unwrap_err();
        assert!(e.starts_with("process.args and process.env: "), "{e}");
        assert!(e.contains(&MAX_TOTAL_BYTES.to_string()), "{e}");
    }
}
