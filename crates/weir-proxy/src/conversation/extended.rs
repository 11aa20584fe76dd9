//! The extended-protocol half of the client scan: Parse, Bind, Describe and Close of
//! named statements mapped to proxy-wide server names, the unnamed statement carried
//! across transactions, and errors the server raises in the client's place.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use weir_wire::build::{put_cstr, put_frame};
use weir_wire::frame::read_cstr;
use weir_wire::frontend::{bind_names, target};

use super::{admit_features, Conversation, Expect, NameChange, Rewriter, Synthetic, Undo};
use crate::error::ClientError;
use crate::prepared::{put_bind_renamed, put_describe_statement, Statement};
use crate::session_state::Ctx;
use crate::statement::{raise_query, refuse_named_statements};

impl Conversation {
    /// Parse, Bind, Describe, Close, Execute outside an error skip.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn extended(
        &mut self,
        tag: u8,
        body: &[u8],
        pos: usize,
        frame_len: usize,
        ctx: &mut Ctx<'_>,
        w: &mut Rewriter<'_>,
        to_client: &mut BytesMut,
    ) -> Result<(), ClientError> {
        if !ctx.transaction_mode {
            self.queue.push_back(Expect::Message(tag, Undo::default()));
            return Ok(());
        }
        match tag {
            b'P' => self.parse(body, pos, frame_len, ctx, w, to_client)?,
            b'B' => {
                let Some((portal, name)) = bind_names(body) else {
                    self.queue.push_back(Expect::Message(tag, Undo::default()));
                    return Ok(());
                };
                // What follows the statement name: formats, values, result formats.
                let after = &body[portal.len() + 1 + name.len() + 1..];
                let uses = self.resolve(name, true, pos, ctx, w)?;
                if let Some(statement) = &uses {
                    let out = w.edit_at(pos);
                    put_bind_renamed(out, portal, &statement.server_name, after);
                    w.skip_to(pos + frame_len);
                }
                let undo = Undo {
                    uses,
                    ..Undo::default()
                };
                self.queue.push_back(Expect::Message(tag, undo));
            }
            b'D' => {
                let mut uses = None;
                if let Some((b'S', name)) = target(body) {
                    uses = self.resolve(name, false, pos, ctx, w)?;
                    if let Some(statement) = &uses {
                        let out = w.edit_at(pos);
                        put_describe_statement(out, &statement.server_name);
                        w.skip_to(pos + frame_len);
                    }
                }
                let undo = Undo {
                    uses,
                    ..Undo::default()
                };
                self.queue.push_back(Expect::Message(tag, undo));
            }
            b'C' => match target(body) {
                Some((b'S', name)) if !name.is_empty() => {
                    if ctx.max_prepared == 0 {
                        return Err(refuse_named_statements(name));
                    }
                    // Kept on the server; the client's name is forgotten when this is
                    // answered in order, like PostgreSQL (closing an unknown name is fine).
                    w.edit_at(pos);
                    w.skip_to(pos + frame_len);
                    let previous = ctx.client.statements.remove(name);
                    let undo = Undo {
                        client_name: previous.map(|p| (name.into(), Some(p))),
                        ..Undo::default()
                    };
                    self.push_synthetic(Synthetic::CloseComplete, undo, to_client);
                }
                Some((b'S', _)) => {
                    ctx.client.unnamed = None;
                    self.unnamed_parsed = false;
                    if let Some((_, true)) = ctx.client.unnamed_mapped.take() {
                        // Served from a named server copy, which stays for other clients.
                        w.edit_at(pos);
                        w.skip_to(pos + frame_len);
                        self.push_synthetic(Synthetic::CloseComplete, Undo::default(), to_client);
                    } else {
                        self.queue.push_back(Expect::Message(tag, Undo::default()));
                    }
                }
                _ => self.queue.push_back(Expect::Message(tag, Undo::default())),
            },
            _ => self.queue.push_back(Expect::Message(tag, Undo::default())),
        }
        Ok(())
    }

    fn parse(
        &mut self,
        body: &[u8],
        pos: usize,
        frame_len: usize,
        ctx: &mut Ctx<'_>,
        w: &mut Rewriter<'_>,
        to_client: &mut BytesMut,
    ) -> Result<(), ClientError> {
        let Some((name, after_name)) = read_cstr(body) else {
            // Malformed: PostgreSQL reports it.
            self.queue.push_back(Expect::Message(b'P', Undo::default()));
            return Ok(());
        };
        let query = read_cstr(after_name).map(|(q, _)| q).unwrap_or_default();
        ctx.client.note_query(query);
        // Read as the server reads it: with standard_conforming_strings off, `'x\''` is
        // one string and a call after it is a call.
        let backslash_quotes = ctx.client.params.backslash_quotes();
        let effects = ctx.client.effects_of(query, backslash_quotes);
        if !effects.is_none() {
            if let Some(refusal) = admit_features(&effects, ctx) {
                // Raised by the server, so the transaction fails exactly as PostgreSQL's would.
                let out = w.edit_at(pos);
                self.raise_in_batch(&refusal, out);
                w.skip_to(pos + frame_len);
                return Ok(());
            }
            self.apply_effects(&effects, ctx);
        }
        if name.is_empty() {
            if ctx.cache_unnamed
                && self.parse_unnamed_as_named(after_name, pos, frame_len, ctx, w, to_client)
            {
                return Ok(());
            }
            let mut saved = ctx.client.unnamed.take().unwrap_or_default();
            saved.clear();
            saved.extend_from_slice(after_name);
            ctx.client.unnamed = Some(saved);
            self.unnamed_parsed = true;
            let undo = Undo {
                unnamed: true,
                ..Undo::default()
            };
            self.queue.push_back(Expect::Message(b'P', undo));
            return Ok(());
        }
        if ctx.max_prepared == 0 {
            return Err(refuse_named_statements(name));
        }
        if ctx.client.statements.get(name).is_some() {
            let message = format!(
                "prepared statement \"{}\" already exists",
                String::from_utf8_lossy(name)
            );
            let out = w.edit_at(pos);
            self.raise_in_batch(&raise_query("42P05", &message, None), out);
            w.skip_to(pos + frame_len);
            return Ok(());
        }
        let statement = ctx.registry.intern(after_name);
        ctx.client.statements.insert(name, statement.clone());
        let client_name = Some((Box::<[u8]>::from(name), None));
        let on_server = ctx.server.statements.touch(&statement);
        w.edit_at(pos);
        w.skip_to(pos + frame_len);
        self.parse_as_server_statement(statement, on_server, client_name, ctx, w, to_client);
        Ok(())
    }

    /// `cache_unnamed_statements`: an unnamed statement parsed before (by any client) is
    /// served from its named server copy: the Parse is answered by the proxy when the
    /// server has it, or sent under the server-side name. Returns false to parse it as
    /// an ordinary unnamed statement (first sighting: one-off texts stay one-off).
    /// One with parameters gets a server copy of its own that keeps custom plans
    /// ([`crate::prepared::StatementRegistry::intern_unnamed`]).
    fn parse_unnamed_as_named(
        &mut self,
        body: &[u8],
        pos: usize,
        frame_len: usize,
        ctx: &mut Ctx<'_>,
        w: &mut Rewriter<'_>,
        to_client: &mut BytesMut,
    ) -> bool {
        // A client repeating its last unnamed text (every parameterised query) finds it
        // here: no registry lock and no hashing of the text per query.
        let statement = match &ctx.client.unnamed_mapped {
            Some((known, _)) if known.body[..] == *body => known.clone(),
            _ => ctx.registry.intern_unnamed(body),
        };
        let repeated = statement.unnamed_parses.fetch_add(1, Relaxed) > 0;
        let on_server = ctx.server.statements.touch(&statement);
        if !repeated && !on_server {
            // Kept alive so the client's next Parse of the same text is recognised.
            ctx.client.unnamed_mapped = Some((statement, false));
            return false;
        }
        ctx.client.unnamed = None;
        ctx.client.unnamed_mapped = Some((statement.clone(), true));
        self.unnamed_parsed = false;
        w.edit_at(pos);
        w.skip_to(pos + frame_len);
        self.parse_as_server_statement(statement, on_server, None, ctx, w, to_client);
        true
    }

    /// Stands in for a client's Parse (already cut from the output): answered by the
    /// proxy when the server has `statement`, else sent under its server-side name.
    /// `client_name` is the client-name change to undo if the server skips or fails it.
    fn parse_as_server_statement(
        &mut self,
        statement: Arc<Statement>,
        on_server: bool,
        client_name: Option<NameChange>,
        ctx: &mut Ctx<'_>,
        w: &mut Rewriter<'_>,
        to_client: &mut BytesMut,
    ) {
        if on_server {
            ctx.metrics.prepare_hits.fetch_add(1, Relaxed);
            let undo = Undo {
                client_name,
                ..Undo::default()
            };
            self.push_synthetic(Synthetic::ParseComplete, undo, to_client);
        } else {
            let replaces_copy = self.send_parse(&statement, ctx, w.out);
            let undo = Undo {
                server_statement: Some(statement),
                client_name,
                replaces_copy,
                ..Undo::default()
            };
            self.queue.push_back(Expect::Message(b'P', undo));
        }
    }

    /// The statement a Bind (`bind`) or Describe names, made sure to exist on this server
    /// connection (a Parse is sent ahead of the message at `pos` when it does not).
    /// `None`: send the message unchanged (the unnamed statement, or a name the client
    /// never prepared, which the server then reports as PostgreSQL would).
    fn resolve(
        &mut self,
        name: &[u8],
        bind: bool,
        pos: usize,
        ctx: &mut Ctx<'_>,
        w: &mut Rewriter<'_>,
    ) -> Result<Option<Arc<Statement>>, ClientError> {
        if name.is_empty() {
            if let Some((statement, true)) = &ctx.client.unnamed_mapped {
                let statement = statement.clone();
                self.ensure_on_server(&statement, bind, pos, ctx, w);
                return Ok(Some(statement));
            }
            if !self.unnamed_parsed {
                if let Some(saved) = &ctx.client.unnamed {
                    // Parsed in an earlier transaction, maybe on another server connection.
                    let out = w.edit_at(pos);
                    put_frame(out, b'P', |b| {
                        put_cstr(b, b"");
                        b.put_slice(saved);
                    });
                    self.unnamed_parsed = true;
                    let undo = Undo {
                        unnamed: true,
                        ..Undo::default()
                    };
                    self.queue.push_back(Expect::Hidden(b'P', undo));
                }
            }
            return Ok(None);
        }
        if ctx.max_prepared == 0 {
            return Err(refuse_named_statements(name));
        }
        let Some(statement) = ctx.client.statements.get(name).cloned() else {
            return Ok(None);
        };
        if let Some((text, _)) = read_cstr(&statement.body) {
            ctx.client.note_query(text);
        }
        self.ensure_on_server(&statement, bind, pos, ctx, w);
        Ok(Some(statement))
    }

    /// Sends a Parse of `statement` ahead of the message at `pos` unless this server
    /// connection has it; its answer is swallowed. Ahead of a Bind (`bind`) of a
    /// statement that keeps custom plans, whose server copy has had its
    /// [`crate::prepared::CUSTOM_PLAN_TRIES`] Binds, sends Close + Parse instead: the new
    /// copy starts PostgreSQL's custom-plan count over, so no Bind gets a generic plan.
    fn ensure_on_server(
        &mut self,
        statement: &Arc<Statement>,
        bind: bool,
        pos: usize,
        ctx: &mut Ctx<'_>,
        w: &mut Rewriter<'_>,
    ) {
        let counted = bind && statement.custom_plans_only;
        if ctx.server.statements.touch(statement) {
            if !(counted && ctx.server.statements.count_bind(statement)) {
                ctx.metrics.prepare_hits.fetch_add(1, Relaxed);
                return;
            }
            // Renewed in place: same name, same LRU slot, Bind count already restarted.
            let out = w.edit_at(pos);
            ctx.metrics.prepares.fetch_add(1, Relaxed);
            statement.put_close(out);
            self.queue.push_back(Expect::Hidden(b'C', Undo::default()));
            statement.put_parse(out);
            let undo = Undo {
                server_statement: Some(statement.clone()),
                replaces_copy: true,
                ..Undo::default()
            };
            self.queue.push_back(Expect::Hidden(b'P', undo));
            return;
        }
        let out = w.edit_at(pos);
        let replaces_copy = self.send_parse(statement, ctx, out);
        if counted {
            // The new copy's first Bind.
            ctx.server.statements.count_bind(statement);
        }
        let undo = Undo {
            server_statement: Some(statement.clone()),
            replaces_copy,
            ..Undo::default()
        };
        self.queue.push_back(Expect::Hidden(b'P', undo));
    }

    /// Writes a Parse of `statement` under its server-side name and records it as
    /// prepared on this server connection; first closes a stale copy of it, and the
    /// least recently used statement when the connection is at `max_prepared_statements`.
    /// The caller queues what the Parse's answer means. Returns whether an old copy was
    /// closed first ([`super::Undo::replaces_copy`]).
    fn send_parse(
        &mut self,
        statement: &Arc<Statement>,
        ctx: &mut Ctx<'_>,
        out: &mut BytesMut,
    ) -> bool {
        ctx.metrics.prepares.fetch_add(1, Relaxed);
        let mut replaces_copy = false;
        if let Some(i) = ctx.server.stale.iter().position(|s| s.id == statement.id) {
            // Its old copy, whose plan went stale, still holds the name on the server.
            ctx.server.stale.swap_remove(i).put_close(out);
            self.queue.push_back(Expect::Hidden(b'C', Undo::default()));
            replaces_copy = true;
        }
        if let Some(evicted) = ctx
            .server
            .statements
            .insert(statement.clone(), ctx.max_prepared)
        {
            evicted.put_close(out);
            self.queue.push_back(Expect::Hidden(b'C', Undo::default()));
        }
        statement.put_parse(out);
        replaces_copy
    }

    /// Sends, in place of a client's extended message, an unnamed statement that raises
    /// `sql`'s error: the server fails the message and skips to Sync like for any error.
    fn raise_in_batch(&mut self, sql: &str, out: &mut BytesMut) {
        put_frame(out, b'P', |b| {
            put_cstr(b, b"");
            put_cstr(b, sql.as_bytes());
            b.put_i16(0);
        });
        put_frame(out, b'B', |b| {
            b.put_slice(b"\0\0");
            b.put_i16(0);
            b.put_i16(0);
            b.put_i16(0);
        });
        put_frame(out, b'E', |b| {
            b.put_u8(0);
            b.put_i32(0);
        });
        // The client's unnamed statement is gone from this server connection.
        self.unnamed_parsed = false;
        self.queue.push_back(Expect::Hidden(b'P', Undo::default()));
        self.queue.push_back(Expect::Hidden(b'B', Undo::default()));
        self.queue.push_back(Expect::Message(b'E', Undo::default()));
    }
}
