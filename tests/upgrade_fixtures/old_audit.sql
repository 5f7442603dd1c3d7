BEGIN TRANSACTION;
CREATE TABLE audit_checkpoints (
    seq INTEGER PRIMARY KEY, hash TEXT NOT NULL, ts REAL NOT NULL, key_id TEXT NOT NULL, signature BLOB NOT NULL);
INSERT INTO "audit_checkpoints" VALUES(3,'135b6f1456c6cc9a954d8d2bd6c902989b7d758308dfee37b500605d1d39817d',1796375360.0,'2509a6a9e26953e4',X'EEF19832B5877680E8B029A9EE7C18A7F7D68EFAC04F5E5CA1FBD41007D8033502B147DACA7840FD2EEF0F3D37131B8BDC5D4E1A9DD2D6469E3AA8CA4A40EF01');
CREATE TABLE audit_records (
    seq INTEGER PRIMARY KEY, ts REAL NOT NULL, body TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
INSERT INTO "audit_records" VALUES(1,1796375350.0,'{"completion_tokens":5,"decision":{"chosen":{"endpoint":"emu0","jurisdiction":"EU","site":"s0"},"policy":"balanced"},"extra":{"route":"/v1/chat/completions"},"firewall":[],"key_id":"0ebfd32a3efe","model":"emu","outcome":"ok","prompt_hmac":null,"prompt_text":null,"prompt_tokens":2,"request_id":"dec-0000000000000000","tenant":"acme","ts":1796375350.0}','0000000000000000000000000000000000000000000000000000000000000000','05182bb21b1833c59350c2eb1ded1ab533cab2288147cc22e1501cd6415c2598');
INSERT INTO "audit_records" VALUES(2,1796375351.0,'{"completion_tokens":5,"decision":{"chosen":{"endpoint":"emu0","jurisdiction":"EU","site":"s0"},"policy":"balanced"},"extra":{"route":"/v1/chat/completions"},"firewall":[],"key_id":"0ebfd32a3efe","model":"emu","outcome":"ok","prompt_hmac":null,"prompt_text":null,"prompt_tokens":2,"request_id":"dec-0000000000000001","tenant":"acme","ts":1796375351.0}','05182bb21b1833c59350c2eb1ded1ab533cab2288147cc22e1501cd6415c2598','b2efd2f6166c36d4b41e617d9dd511c46fa8224b99e79f266351e9594b23d958');
INSERT INTO "audit_records" VALUES(3,1796375352.0,'{"completion_tokens":5,"decision":{"chosen":{"endpoint":"emu0","jurisdiction":"EU","site":"s0"},"policy":"balanced"},"extra":{"route":"/v1/chat/completions"},"firewall":[],"key_id":"0ebfd32a3efe","model":"emu","outcome":"ok","prompt_hmac":null,"prompt_text":null,"prompt_tokens":2,"request_id":"dec-0000000000000002","tenant":"acme","ts":1796375352.0}','b2efd2f6166c36d4b41e617d9dd511c46fa8224b99e79f266351e9594b23d958','135b6f1456c6cc9a954d8d2bd6c902989b7d758308dfee37b500605d1d39817d');
CREATE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
COMMIT;
