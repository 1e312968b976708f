//! Web console sessions: what `POST /console/login` opens after checking the API token, and
//! what the cookie a browser then sends names. The id is random (not the token), compared in
//! constant time, lives 12 hours, and at most 64 are open at once (the oldest goes). Both
//! `auth` (a session is a credential) and `console` (which opens and closes them) use it.

use axum::http::{HeaderMap, header};
use std::collections::VecDeque;
use std::sync::Mutex;

/// The cookie that carries a console session.
pub const COOKIE: &str = "provd_console";
/// The header the console's own requests carry (what a cross-site form cannot).
pub const CSRF_HEADER: &str = "x-provd-console";
pub const SESSION_TTL: u64 = 12 * 3600;
const MAX_SESSIONS: usize = 64;

/// Open console sessions: (id, expiry). The oldest goes when a 65th logs in.
#[derive(Default)]
pub struct Sessions {
    open: Mutex<VecDeque<(String, u64)>>,
}

impl Sessions {
    pub fn open(&self, now: u64) -> String {
        let id = crate::random::token();
        let mut open = self.open.lock().expect("sessions");
        open.retain(|(_, exp)| *exp > now);
        if open.len() >= MAX_SESSIONS {
            open.pop_front();
        }
        open.push_back((id.clone(), now + SESSION_TTL));
        id
    }

    pub fn valid(&self, id: &str, now: u64) -> bool {
        let open = self.open.lock().expect("sessions");
        open.iter()
            .any(|(s, exp)| *exp > now && constant_time_eq(s.as_bytes(), id.as_bytes()))
    }

    pub fn close(&self, id: &str) {
        self.open.lock().expect("sessions").retain(|(s, _)| s != id);
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `Set-Cookie` value that opens session `id` (`Secure` over HTTPS): the one place its
/// attributes are written, for the site's console and the region's.
pub fn session_cookie(id: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_TTL}{secure}")
}

/// The `Set-Cookie` value that ends a session in the browser.
pub fn cleared_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The console session id a request carries, if any.
pub fn session_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_are_bounded_and_close() {
        let s = Sessions::default();
        let a = s.open(1000);
        assert!(s.valid(&a, 1000) && !s.valid(&a, 1000 + SESSION_TTL));
        assert!(!s.valid("nope", 1000) && !s.valid("", 1000));
        for _ in 0..MAX_SESSIONS {
            s.open(1001);
        }
        assert!(!s.valid(&a, 1001), "the oldest went when a 65th opened");
        let b = s.open(1002);
        s.close(&b);
        assert!(!s.valid(&b, 1002));
    }

    #[test]
    fn the_session_comes_from_its_own_cookie_only() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "theme=dark; provd_console=abc; other=1".parse().unwrap(),
        );
        assert_eq!(session_of(&h), Some("abc"));
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "provd_console_old=zzz".parse().unwrap());
        assert_eq!(session_of(&h), None);
    }
}
