-- The session page shows the access request (reason, approver, comment) behind the credential a
-- session used: looked up by credential, which only issued requests have.
CREATE UNIQUE INDEX access_requests_credential_idx ON access_requests (credential_id)
    WHERE credential_id IS NOT NULL;
