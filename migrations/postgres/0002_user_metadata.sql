-- claimrules schema version 2 (PostgreSQL): metadata that rules persist with update_app_metadata /
-- update_user_metadata. Each column holds a JSON object of top-level keys laid over the user's
-- metadata from the config file at login; a JSON null removes the key.
CREATE TABLE user_metadata (
    user_id       TEXT PRIMARY KEY NOT NULL,
    app_metadata  TEXT NOT NULL DEFAULT '{}',
    user_metadata TEXT NOT NULL DEFAULT '{}'
);
