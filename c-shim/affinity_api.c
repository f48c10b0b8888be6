/*
 * The plugin's binary API (api/affinity.api): enable/disable, control
 * address, authentication key, and the fixed, wildcard and counter dumps,
 * whose rows the Rust core produces through callbacks.
 */
#include <vnet/ip/ip4.h>
#include <vnet/ip/format.h>
#include <vnet/udp/udp_packet.h>
#include <vnet/udp/udp_local.h>
#include <vlibapi/api.h>
#include <vlibmemory/api.h>
#include <vnet/ip/ip_types_api.h>

#include <affinity/affinity.api_enum.h>
#include <affinity/affinity.api_types.h>

#include "affinity.h"

#define REPLY_MSG_ID_BASE am->msg_id_base
#include <vlibapi/api_helper_macros.h>

static void
vl_api_affinity_enable_disable_t_handler (vl_api_affinity_enable_disable_t *mp)
{
  affinity_main_t *am = &affinity_main;
  vl_api_affinity_enable_disable_reply_t *rmp;
  int rv = affinity_enable_disable (ntohl (mp->sw_if_index), mp->enable);
  REPLY_MACRO (VL_API_AFFINITY_ENABLE_DISABLE_REPLY);
}

static void
vl_api_affinity_set_control_t_handler (vl_api_affinity_set_control_t *mp)
{
  affinity_main_t *am = &affinity_main;
  vl_api_affinity_set_control_reply_t *rmp;
  int rv = 0;
  ip4_address_t a;
  ip4_address_decode (mp->agent_address, &a);
  affinity_rs_set_agent_address (a.as_u32);
  u16 port = ntohs (mp->listen_port);
  if (port && port != am->cfg.listen_port)
    {
      udp_register_dst_port (vlib_get_main (), port, affinity_ctl_node.index,
			     1);
      am->cfg.listen_port = port;
    }
  REPLY_MACRO (VL_API_AFFINITY_SET_CONTROL_REPLY);
}

static void
vl_api_affinity_set_auth_key_t_handler (vl_api_affinity_set_auth_key_t *mp)
{
  affinity_main_t *am = &affinity_main;
  vl_api_affinity_set_auth_key_reply_t *rmp;
  /* The API's retval is the core's affinity_rc_t (0: AFFINITY_RC_OK). */
  int rv = affinity_rs_set_auth_key (ntohs (mp->key_id), mp->algorithm,
				     mp->key, clib_min (mp->key_len, 64));
  REPLY_MACRO (VL_API_AFFINITY_SET_AUTH_KEY_REPLY);
}

typedef struct
{
  vl_api_registration_t *reg;
  u32 context;
} affinity_dump_ctx_t;

static void
affinity_send_fixed (void *c, const affinity_fixed_row_t *r)
{
  affinity_dump_ctx_t *ctx = c;
  vl_api_affinity_fixed_details_t *rmp = vl_msg_api_alloc (sizeof (*rmp));
  clib_memset (rmp, 0, sizeof (*rmp));
  rmp->_vl_msg_id =
    htons (VL_API_AFFINITY_FIXED_DETAILS + affinity_main.msg_id_base);
  rmp->context = ctx->context;
  rmp->protocol = r->protocol;
  clib_memcpy (rmp->src_address, &r->src_address, 4);
  clib_memcpy (rmp->dst_address, &r->dst_address, 4);
  rmp->src_port = htons (r->src_port);
  rmp->dst_port = htons (r->dst_port);
  rmp->nat_flags = r->nat_flags;
  clib_memcpy (rmp->nat_src_address, &r->nat_src_address, 4);
  clib_memcpy (rmp->nat_dst_address, &r->nat_dst_address, 4);
  rmp->nat_src_port = htons (r->nat_src_port);
  rmp->nat_dst_port = htons (r->nat_dst_port);
  clib_memcpy (rmp->owner, &r->owner, 4);
  rmp->ttl_remaining_ds = htonl (r->ttl_remaining_ds);
  rmp->packets = clib_host_to_net_u64 (r->packets);
  rmp->bytes = clib_host_to_net_u64 (r->bytes);
  vl_api_send_msg (ctx->reg, (u8 *) rmp);
}

static void
vl_api_affinity_fixed_dump_t_handler (vl_api_affinity_fixed_dump_t *mp)
{
  vl_api_registration_t *reg =
    vl_api_client_index_to_registration (mp->client_index);
  if (!reg)
    return;
  affinity_dump_ctx_t ctx = { .reg = reg, .context = mp->context };
  affinity_rs_fixed_rows (vlib_time_now (vlib_get_main ()),
			  ntohl (mp->max_entries), affinity_send_fixed, &ctx);
}

static void
affinity_send_wildcard (void *c, const affinity_wildcard_row_t *r)
{
  affinity_dump_ctx_t *ctx = c;
  vl_api_affinity_wildcard_details_t *rmp = vl_msg_api_alloc (sizeof (*rmp));
  clib_memset (rmp, 0, sizeof (*rmp));
  rmp->_vl_msg_id =
    htons (VL_API_AFFINITY_WILDCARD_DETAILS + affinity_main.msg_id_base);
  rmp->context = ctx->context;
  clib_memcpy (rmp->owner, &r->owner, 4);
  rmp->id = htonl (r->id);
  rmp->protocol = r->protocol;
  clib_memcpy (rmp->src_address, &r->src_address, 4);
  rmp->src_prefix_len = r->src_prefix_len;
  clib_memcpy (rmp->dst_address, &r->dst_address, 4);
  rmp->dst_prefix_len = r->dst_prefix_len;
  rmp->src_port = htons (r->src_port);
  rmp->dst_port = htons (r->dst_port);
  rmp->service_precedence = htons (r->service_precedence);
  rmp->backup_precedence = htons (r->backup_precedence);
  rmp->interest_mask = htons (r->interest_mask);
  rmp->ttl_remaining_ds = htonl (r->ttl_remaining_ds);
  vl_api_send_msg (ctx->reg, (u8 *) rmp);
}

static void
vl_api_affinity_wildcard_dump_t_handler (vl_api_affinity_wildcard_dump_t *mp)
{
  vl_api_registration_t *reg =
    vl_api_client_index_to_registration (mp->client_index);
  if (!reg)
    return;
  affinity_dump_ctx_t ctx = { .reg = reg, .context = mp->context };
  affinity_rs_wildcard_rows (vlib_time_now (vlib_get_main ()),
			     affinity_send_wildcard, &ctx);
}

static void
vl_api_affinity_counter_dump_t_handler (vl_api_affinity_counter_dump_t *mp)
{
  vl_api_registration_t *reg =
    vl_api_client_index_to_registration (mp->client_index);
  if (!reg)
    return;
  for (u32 i = 0; i < affinity_rs_counter_count (); i++)
    {
      const char *name = affinity_rs_counter_name (i);
      vl_api_affinity_counter_details_t *rmp = vl_msg_api_alloc (sizeof (*rmp));
      clib_memset (rmp, 0, sizeof (*rmp));
      rmp->_vl_msg_id =
	htons (VL_API_AFFINITY_COUNTER_DETAILS + affinity_main.msg_id_base);
      rmp->context = mp->context;
      strncpy ((char *) rmp->name, name, sizeof (rmp->name) - 1);
      rmp->value = clib_host_to_net_u64 (affinity_rs_counter_value (i));
      vl_api_send_msg (reg, (u8 *) rmp);
    }
}

#include <vnet/format_fns.h>
#include <vnet/ip/ip_format_fns.h>
#include <affinity/affinity.api.c>

/* The message table (generated from api/affinity.api). */
static clib_error_t *
affinity_api_hookup (vlib_main_t *vm)
{
  affinity_main.msg_id_base = setup_message_id_table ();
  return 0;
}

VLIB_INIT_FUNCTION (affinity_api_hookup);
