//! Header names as CGI-style servers see them: servers that hand headers to applications as
//! variables (PHP, Rack, WSGI) turn `X-Forwarded-User`, `X_Forwarded_User` and
//! `X.Forwarded.User` into the same `HTTP_X_FORWARDED_USER`. Names are compared after folding
//! every character but letters and digits to `-` (what the gateway strips, what the
//! configuration may name).

/// `name` lowercased, with every character but letters and digits turned into `-`.
pub fn fold_name(name: &str) -> String {
    name.bytes().map(|b| fold(b) as char).collect()
}

#[inline]
fn fold(b: u8) -> u8 {
    if b.is_ascii_alphanumeric() {
        b.to_ascii_lowercase()
    } else {
        b'-'
    }
}

/// Whether `incoming` (a lowercase header name) folds to `folded`.
#[inline]
pub fn folds_to(incoming: &[u8], folded: &[u8]) -> bool {
    incoming.len() == folded.len() && incoming.iter().zip(folded).all(|(&a, &b)| fold(a) == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_fold_alike() {
        assert_eq!(fold_name("X_Forwarded.User"), "x-forwarded-user");
        assert!(folds_to(b"x_forwarded_user", b"x-forwarded-user"));
        assert!(!folds_to(b"x-forwarded-users", b"x-forwarded-user"));
    }
}
