//! Signed, self-contained payloads: session tokens, statement handles, tickets, session cookies.
//!
//! Layout: `kind (1 byte) ‖ protobuf payload ‖ HMAC-SHA256(key, kind ‖ payload)`. The kind is
//! under the MAC, so a ticket cannot be replayed as a token or a handle as a cookie.

use hmac::{Hmac, Mac};
use prost::Message;
use sha2::Sha256;

const MAC_LEN: usize = 32;

/// What a sealed payload is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    SessionToken = 1,
    PreparedStatement = 2,
    Ticket = 3,
    SessionCookie = 4,
}

/// Seals and opens payloads with one key.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

/// A payload that is not one this server sealed (or was altered, or is of another kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forged;

impl Signer {
    /// A signer with `key` (at least 32 bytes of secret).
    pub fn new(key: Vec<u8>) -> Signer {
        Signer { key }
    }

    /// A signer with a fresh random key.
    pub fn random() -> Signer {
        let key: [u8; 32] = rand::random();
        Signer { key: key.to_vec() }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        Hmac::<Sha256>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
    }

    /// `kind ‖ message ‖ mac`.
    pub fn seal(&self, kind: Kind, message: &impl Message) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + message.encoded_len() + MAC_LEN);
        out.push(kind as u8);
        message.encode(&mut out).unwrap_or_else(|_| unreachable!("Vec grows"));
        let mut mac = self.mac();
        mac.update(&out);
        out.extend_from_slice(&mac.finalize().into_bytes());
        out
    }

    /// The message sealed in `bytes`, if this key sealed it as `kind`.
    pub fn open<M: Message + Default>(&self, kind: Kind, bytes: &[u8]) -> Result<M, Forged> {
        if bytes.len() < 1 + MAC_LEN || bytes[0] != kind as u8 {
            return Err(Forged);
        }
        let (body, tag) = bytes.split_at(bytes.len() - MAC_LEN);
        let mut mac = self.mac();
        mac.update(body);
        mac.verify_slice(tag).map_err(|_| Forged)?;
        M::decode(&body[1..]).map_err(|_| Forged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::SessionCookie;

    #[test]
    fn round_trip_and_tamper() {
        let s = Signer::new(b"0123456789abcdef0123456789abcdef".to_vec());
        let msg = SessionCookie {
            principal: "alice".into(),
            schema: "customer".into(),
            expires_at: 5,
        };
        let sealed = s.seal(Kind::SessionCookie, &msg);
        assert_eq!(s.open::<SessionCookie>(Kind::SessionCookie, &sealed), Ok(msg.clone()));
        // Another kind, another key, any flipped bit: refused.
        assert_eq!(s.open::<SessionCookie>(Kind::Ticket, &sealed), Err(Forged));
        assert_eq!(
            Signer::random().open::<SessionCookie>(Kind::SessionCookie, &sealed),
            Err(Forged)
        );
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 1;
            assert_eq!(
                s.open::<SessionCookie>(Kind::SessionCookie, &t),
                Err(Forged),
                "byte {i}"
            );
        }
        assert_eq!(s.open::<SessionCookie>(Kind::SessionCookie, &sealed[..10]), Err(Forged));
    }
}
