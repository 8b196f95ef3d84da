//! The memo of verified tokens answers exactly as `KeyRing::verify` would.

use std::sync::Arc;

use super::*;
use crate::token::verified::VerifiedTokens;

#[test]
fn a_memoized_token_gives_the_same_claims_and_still_expires() {
    let ring = hs_ring();
    let memo = VerifiedTokens::new(16);
    let token = ring.mint("s1", &pos("users=5"), now());
    let first = memo.verify(&ring, &token, now()).unwrap();
    assert_eq!(*first, ring.verify(&token, now()).unwrap());
    assert_eq!(memo.len(), 1);
    let later = now() + Duration::from_secs(1);
    let again = memo.verify(&ring, &token, later).unwrap();
    assert!(
        Arc::ptr_eq(&first, &again),
        "second verify came from the memo"
    );
    let expired = now() + ring.ttl() + Duration::from_secs(1);
    assert_eq!(ring.verify(&token, expired), Err(TokenError::Expired));
    assert_eq!(
        memo.verify(&ring, &token, expired),
        Err(TokenError::Expired)
    );
}

#[test]
fn refused_tokens_are_not_memoized_and_stay_refused() {
    let ring = hs_ring();
    let memo = VerifiedTokens::new(16);
    let token = ring.mint("s1", &pos("users=5"), now());
    let mut tampered = token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    for _ in 0..2 {
        assert_eq!(
            memo.verify(&ring, &tampered, now()),
            Err(TokenError::Signature)
        );
    }
    assert!(memo.is_empty());
    // Another ring's token stays refused after this ring's token was memoized.
    memo.verify(&ring, &token, now()).unwrap();
    let other = super::ring(hs("k1", b"another-secret-0123456789abcdef-xx"), vec![]);
    let foreign = other.mint("s2", &pos("users=1"), now());
    assert_eq!(
        memo.verify(&ring, &foreign, now()),
        Err(TokenError::Signature)
    );
    assert_eq!(memo.len(), 1);
}

#[test]
fn memory_stays_under_two_generations_and_a_token_in_use_stays() {
    let ring = hs_ring();
    let memo = VerifiedTokens::new(8);
    let hot = ring.mint("hot", &pos("users=1"), now());
    let first = memo.verify(&ring, &hot, now()).unwrap();
    for i in 0..100 {
        let t = ring.mint(&format!("s{i}"), &pos(&format!("users={i}")), now());
        memo.verify(&ring, &t, now()).unwrap();
        let hit = memo.verify(&ring, &hot, now()).unwrap();
        assert!(Arc::ptr_eq(&first, &hit), "token in use evicted at {i}");
        assert!(memo.len() <= 16, "{} entries", memo.len());
    }
}

#[test]
fn capacity_zero_keeps_nothing() {
    let ring = hs_ring();
    let memo = VerifiedTokens::new(0);
    let token = ring.mint("s1", &pos("users=5"), now());
    assert!(memo.verify(&ring, &token, now()).is_ok());
    assert!(memo.is_empty());
}
