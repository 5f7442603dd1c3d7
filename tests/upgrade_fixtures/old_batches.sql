BEGIN TRANSACTION;
CREATE TABLE batches (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, created_at INTEGER NOT NULL, status TEXT NOT NULL,
    object TEXT NOT NULL, principal TEXT NOT NULL, headers TEXT NOT NULL, owner TEXT, heartbeat REAL);
INSERT INTO "batches" VALUES('batch_0123456789abcdef01234567','acme',1796375350,'completed','{"id":"batch_0123456789abcdef01234567","object":"batch","endpoint":"/v1/chat/completions","errors":null,"input_file_id":"file-adf185f45175b687b1c00480","completion_window":"24h","status":"completed","output_file_id":"file-356c2d1d1a492d154ce11cc2","error_file_id":null,"created_at":1796375350,"in_progress_at":1796375351,"expires_at":1796461750,"finalizing_at":1796375352,"completed_at":1796375352,"failed_at":null,"expired_at":null,"cancelling_at":null,"cancelled_at":null,"request_counts":{"total":1,"completed":1,"failed":0},"metadata":null,"usage":{"input_tokens":2,"input_tokens_details":{"cached_tokens":0},"output_tokens":5,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":7}}','{"tenant":"acme","key_id":"0ebfd32a3efe","method":"api_key","scopes":{"models":null,"jurisdictions":null,"sites":null,"policy":null,"max_priority":9}}','{}',NULL,NULL);
CREATE TABLE files (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, purpose TEXT NOT NULL, filename TEXT NOT NULL,
    bytes INTEGER NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER, path TEXT NOT NULL);
INSERT INTO "files" VALUES('file-adf185f45175b687b1c00480','acme','batch','in.jsonl',161,1796375916,NULL,'acme/file-adf185f45175b687b1c00480.jsonl');
INSERT INTO "files" VALUES('file-356c2d1d1a492d154ce11cc2','acme','batch_output','batch_0123456789abcdef01234567_output.jsonl',199,1796375916,NULL,'acme/batch_0123456789abcdef01234567_output.jsonl');
CREATE INDEX files_by_tenant ON files (tenant, created_at);
CREATE INDEX batches_by_tenant ON batches (tenant, created_at);
CREATE INDEX batches_by_status ON batches (status);
COMMIT;
