/*
 * mod_tsgi: run tsgi handlers (TypeScript fetch-style handlers) in Node
 * workers that the Apache parent spawns and supervises (see mod_tsgi.h for
 * the files and ../README.md for the request path).
 *
 *   TsgiDaemon app handler=/srv/app.ts processes=2
 *   <Location />
 *     SetHandler tsgi
 *     TsgiDaemonName app
 *   </Location>
 *
 * This file: the hooks (map_to_storage, handler, check_authn, check_authz,
 * log_transaction, post_config, child_init), register_hooks, and the module
 * record last.
 */
#include "mod_tsgi.h"

#include "http_core.h"
#include "http_protocol.h"
#include "http_request.h"

#include <errno.h>
#include <sched.h>
#include <string.h>

/* SetHandler tsgi with TsgiDaemonName in a <Location>: no file lies behind
 * the URL, so skip core's directory and file walk (5 stat calls per request)
 * and the later map_to_storage hooks, as mod_proxy does for its URLs. */
static int tsgi_map_to_storage(request_rec *r)
{
    tsgi_dir_conf *dc;
    core_dir_config *cd;
    const char *handler, *err = NULL;
    if (r->proxyreq || ap_location_walk(r) != OK)
        return DECLINED;
    dc = ap_get_module_config(r->per_dir_config, &tsgi_module);
    if (!dc || !dc->content || !dc->in_location)
        return DECLINED;
    /* Only where SetHandler tsgi applies: a nested <Location> may hand the
     * URL back to files (SetHandler none with an Alias). */
    cd = ap_get_core_module_config(r->per_dir_config);
    if (!cd->expr_handler)
        return DECLINED;
    handler = ap_expr_str_exec(r, cd->expr_handler, &err);
    return !err && handler && !strcasecmp(handler, TSGI_HANDLER_NAME) ? OK : DECLINED;
}

static int tsgi_handler(request_rec *r)
{
    tsgi_dir_conf *dc;
    int status, flags = 0;
    const char *user;
    if (!r->handler || strcmp(r->handler, TSGI_HANDLER_NAME))
        return DECLINED;
    dc = ap_get_module_config(r->per_dir_config, &tsgi_module);
    if (!dc->content) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "mod_tsgi: SetHandler tsgi without TsgiDaemonName for %s", r->uri);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (apr_table_get(r->notes, "tsgi-authn"))
        flags |= TSGI_RF_AUTHN_DONE;
    if (apr_table_get(r->notes, "tsgi-authz"))
        flags |= TSGI_RF_AUTHZ_DONE;
    /* The worker runs log for this request; TsgiLog must not repeat it. */
    apr_table_setn(r->notes, "tsgi-logged", "1");
    if (tsgi_exchange(r, dc->content, TSGI_PHASE_FULL, flags, &status, &user) == TSGI_OUT_RESPONSE)
        return OK;
    apr_table_unset(r->notes, "tsgi-logged");
    return status;
}

/* Runs an access phase; TSGI_OUT_RESPONSE means the rejecting response was sent. */
static int access_phase(request_rec *r, tsgi_daemon *d, int phase, const char **user)
{
    int status, flags = apr_table_get(r->notes, "tsgi-authn") ? TSGI_RF_AUTHN_DONE : 0;
    switch (tsgi_exchange(r, d, phase, flags, &status, user)) {
    case TSGI_OUT_RESPONSE:
        /* The hook's Response went out as is; DONE ends the request there. */
        return DONE;
    case TSGI_OUT_DECISION:
        return OK;
    default:
        return status;
    }
}

static int tsgi_check_authn(request_rec *r)
{
    tsgi_dir_conf *dc = ap_get_module_config(r->per_dir_config, &tsgi_module);
    const char *user = NULL, *type;
    int rc;
    if (!dc->authn)
        return DECLINED;
    rc = access_phase(r, dc->authn, TSGI_PHASE_AUTHN, &user);
    if (rc != OK)
        return rc;
    if (!user) {
        /* No opinion: let other authn modules try; with "AuthType tsgi"
         * nobody else will, so that is a plain 401. */
        type = ap_auth_type(r);
        return type && !strcasecmp(type, "tsgi") ? HTTP_UNAUTHORIZED : DECLINED;
    }
    r->user = (char *)user;
    if (!r->ap_auth_type)
        r->ap_auth_type = "tsgi";
    apr_table_setn(r->notes, "tsgi-authn", "1");
    return OK;
}

static int tsgi_check_authz(request_rec *r)
{
    tsgi_dir_conf *dc = ap_get_module_config(r->per_dir_config, &tsgi_module);
    const char *user = NULL;
    int rc;
    if (!dc->authz)
        return DECLINED;
    rc = access_phase(r, dc->authz, TSGI_PHASE_AUTHZ, &user);
    if (rc != OK)
        return rc;
    apr_table_setn(r->notes, "tsgi-authz", "1");
    /* Allowed: Apache's own Require rules still get their say. */
    return DECLINED;
}

static int tsgi_log_transaction(request_rec *r)
{
    tsgi_dir_conf *dc = ap_get_module_config(r->per_dir_config, &tsgi_module);
    const char *user;
    int status;
    if (!dc->log || apr_table_get(r->notes, "tsgi-logged"))
        return DECLINED;
    /* Fire and forget: the worker sends nothing back for LOG. */
    tsgi_exchange(r, dc->log, TSGI_PHASE_LOG, 0, &status, &user);
    return DECLINED;
}

static int tsgi_post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    return tsgi_supervisor_start(pconf, s);
}

static void tsgi_child_init(apr_pool_t *pchild, server_rec *s)
{
    tsgi_registry *reg = tsgi_registry_get(s->process->pconf);
    int i, batch = 0;
    /* The MPM creates its threads after child_init; they inherit the policy. */
    if (reg->sched_batch) {
        struct sched_param sp = { 0 };
        batch = sched_setscheduler(0, SCHED_BATCH, &sp) == 0;
        if (!batch)
            ap_log_error(APLOG_MARK, APLOG_WARNING, errno, s, "mod_tsgi: TsgiSchedBatch: sched_setscheduler failed");
    }
    for (i = 0; i < reg->list->nelts; i++) {
        tsgi_daemon *d = APR_ARRAY_IDX(reg->list, i, tsgi_daemon *);
        tsgi_supervisor_child_init(d);
        tsgi_pool_child_init(pchild, d, batch);
    }
}

static void tsgi_register_hooks(apr_pool_t *p)
{
    ap_hook_post_config(tsgi_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(tsgi_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(tsgi_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_map_to_storage(tsgi_map_to_storage, NULL, NULL, APR_HOOK_FIRST);
    ap_hook_check_authn(tsgi_check_authn, NULL, NULL, APR_HOOK_FIRST, AP_AUTH_INTERNAL_PER_CONF);
    ap_hook_check_authz(tsgi_check_authz, NULL, NULL, APR_HOOK_FIRST, AP_AUTH_INTERNAL_PER_CONF);
    ap_hook_log_transaction(tsgi_log_transaction, NULL, NULL, APR_HOOK_MIDDLE);
}

AP_DECLARE_MODULE(tsgi) = {
    STANDARD20_MODULE_STUFF,
    tsgi_create_dir_conf,
    tsgi_merge_dir_conf,
    NULL,
    NULL,
    tsgi_cmds,
    tsgi_register_hooks,
    0
};
