//! API tokens: add (the secret is stored hashed) and delete.

use super::*;

/// Adds an API token whose secret hashes to `secret_sha256` (the secret itself is never stored).
pub(crate) fn create_token(tx: &mut Tx, t: Token) -> Result<Effect, DomainError> {
    text("name", &t.name, 64)?;
    if let Some(g) = &t.group {
        group(tx.state(), g)?;
    }
    if tx.state().tokens.contains_key(&t.id) {
        return Err(exists(&format!("token {}", t.id)));
    }
    let fx = Effect::new(
        Action::TokenCreate,
        ChangeKind::Settings,
        t.group.as_ref(),
        t.id.as_str(),
    )
    .detail(json!({ "name": t.name }));
    tx.put(Record::Token(t));
    Ok(fx)
}

pub(crate) fn delete_token(tx: &mut Tx, id: &str) -> Result<Effect, DomainError> {
    let t = tx
        .state()
        .tokens
        .get(id)
        .ok_or_else(|| DomainError::not_found(format!("token {id} does not exist")))?
        .clone();
    let fx = Effect::new(
        Action::TokenDelete,
        ChangeKind::Settings,
        t.group.as_ref(),
        id,
    )
    .detail(json!({ "name": t.name }));
    tx.delete(RecordKey::Token(t.id));
    Ok(fx)
}
