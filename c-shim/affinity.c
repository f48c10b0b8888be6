/*
 * affinity: distributed NAT and L4 load balancing, the VPP plugin's C.
 * This file: the plugin's state, its startup.conf section, init and
 * main-loop entry (where the Rust core is started). The plugin
 * registration itself is a Rust static (vpp-plugin/src/ffi): a cdylib
 * exports only Rust's symbols, and VPP looks the registration up with
 * dlsym. Packets are decided in Rust; see affinity.h for the other files.
 */
#include <vnet/plugin/plugin.h>
#include <vnet/ip/ip4.h>
#include <vnet/ip/format.h>
#include <vnet/udp/udp_local.h>
#include <vnet/feature/feature.h>
#include <vnet/fib/fib_table.h>
#include <vnet/fib/fib_source.h>

#include "affinity.h"

affinity_main_t affinity_main;

/* The core's counters as the node's error counters: name and description
   are the counter's name (`show errors` and `show affinity stats` print the
   same words); severity: drops are errors, the rest information. */
vlib_error_desc_t affinity_error_counters[AFFINITY_N_ERROR] = {
#define _(sym, str, sev)                                                      \
  [AFFINITY_ERROR_##sym] = { .name = str,                                     \
			     .desc = str,                                     \
			     .severity = VL_COUNTER_SEVERITY_##sev },
  foreach_affinity_error
#undef _
};

uint32_t
affinity_shim_version (void)
{
  return 2;
}

int
affinity_enable_disable (u32 sw_if_index, int enable)
{
  vnet_main_t *vnm = vnet_get_main ();
  if (pool_is_free_index (vnm->interface_main.sw_interfaces, sw_if_index))
    return VNET_API_ERROR_INVALID_SW_IF_INDEX;
  return vnet_feature_enable_disable ("ip4-unicast", "affinity", sw_if_index,
				      enable, 0, 0);
}

/* ---- startup.conf ------------------------------------------------------ */

static clib_error_t *
affinity_config_fn (vlib_main_t *vm, unformat_input_t *input)
{
  affinity_main_t *am = &affinity_main;
  ip4_address_t a;
  u32 v;
  u8 *word = 0;
  while (unformat_check_input (input) != UNFORMAT_END_OF_INPUT)
    {
      if (unformat (input, "agent-address %U", unformat_ip4_address, &a))
	am->cfg.agent_address = a.as_u32;
      else if (unformat (input, "multicast-group %U", unformat_ip4_address,
			 &a))
	am->cfg.multicast_group = a.as_u32;
      else if (unformat (input, "manager %U", unformat_ip4_address, &a))
	{
	  if (am->cfg.n_managers < 8)
	    am->cfg.managers[am->cfg.n_managers++] = a.as_u32;
	}
      else if (unformat (input, "allowed-manager %U", unformat_ip4_address,
			 &a))
	{
	  if (am->cfg.n_allowed_managers >= ARRAY_LEN (am->cfg.allowed_managers))
	    return clib_error_return (0, "affinity: at most %u allowed-manager",
				      ARRAY_LEN (am->cfg.allowed_managers));
	  am->cfg.allowed_managers[am->cfg.n_allowed_managers++] = a.as_u32;
	}
      else if (unformat (input, "activity-report-interval-ms %u", &v))
	{
	  am->cfg.activity_report_interval_ms = v;
	  am->activity_interval_given = 1;
	}
      else if (unformat (input, "warm-up-ms %u", &v))
	{
	  am->cfg.warm_up_ms = v;
	  am->warm_up_given = 1;
	}
      else if (unformat (input, "listen-port %u", &v) && v && v < 65536)
	am->cfg.listen_port = v;
      else if (unformat (input, "fixed-table-size %u", &v))
	am->cfg.fixed_table_size = v;
      else if (unformat (input, "wildcard-table-size %u", &v))
	am->cfg.wildcard_table_size = v;
      else if (unformat (input, "auth-key-file %s", &am->key_file))
	vec_add1 (am->key_file, 0);
      else if (unformat (input, "auth-key-id %u", &v))
	am->cfg.auth_key_id = v;
      else if (unformat (input, "disable-action %s", &word))
	{
	  /* Checked by Rust at init (unknown names fail the start). */
	  vec_append (am->disabled_actions, word);
	  vec_add1 (am->disabled_actions, 0);
	  vec_free (word);
	}
      else
	return clib_error_return (0, "affinity: unknown input '%U'",
				  format_unformat_error, input);
    }
  /* As the host agent's --key-file: a key file that cannot be used stops
     the start, rather than a VPP running without the plugin's core. */
  if (am->key_file)
    switch (affinity_rs_check_key_file ((const char *) am->key_file))
      {
      case AFFINITY_RC_OK:
	break;
      case AFFINITY_RC_KEY_FILE_INVALID:
	return clib_error_return (
	  0, "affinity: auth-key-file %s is empty or longer than 4096 bytes",
	  am->key_file);
      default:
	return clib_error_return (0, "affinity: cannot read auth-key-file %s",
				  am->key_file);
      }
  return 0;
}

VLIB_CONFIG_FUNCTION (affinity_config_fn, "affinity");

/* ---- init --------------------------------------------------------------- */

static clib_error_t *
affinity_init (vlib_main_t *vm)
{
  affinity_main_t *am = &affinity_main;
  /* Advertised prefixes (seed FIG 10H): below the CLI, API and interface
     sources, so an operator's route wins; a simple special entry. */
  am->fib_source = fib_source_allocate ("affinity", FIB_SOURCE_PRIORITY_LOW,
					FIB_SOURCE_BH_SIMPLE);
  if (!am->cfg.listen_port)
    am->cfg.listen_port = 1637;
  if (!am->cfg.fixed_table_size)
    am->cfg.fixed_table_size = 1 << 20;
  if (!am->cfg.wildcard_table_size)
    am->cfg.wildcard_table_size = 16384;
  return 0;
}

VLIB_INIT_FUNCTION (affinity_init);

/* Joins the wildcard multicast group: accepted on any interface and
   delivered locally, where udp4-local hands it to the control node. */
static void
affinity_join_group (vlib_main_t *vm, u32 group)
{
  ip4_address_t g = { .as_u32 = group };
  u8 *cmds[2] = {
    format (0, "ip mroute add %U/32 AA%c", format_ip4_address, &g, 0),
    format (0, "ip mroute add %U/32 via local Forward%c", format_ip4_address,
	    &g, 0),
  };
  for (int i = 0; i < 2; i++)
    {
      unformat_input_t in;
      unformat_init_string (&in, (char *) cmds[i], strlen ((char *) cmds[i]));
      vlib_cli_input (vm, &in, 0, 0);
      unformat_free (&in);
      vec_free (cmds[i]);
    }
}

/* Where the core finds what it reads in a vlib_buffer_t
   (affinity_buffer_layout_t). oflags is a bit-field, so its byte is found
   by setting it in a zeroed buffer; 0 when the layout is not the one the
   core reads (one byte, pre_data right before data). */
static int
affinity_buffer_layout (affinity_buffer_layout_t *l)
{
  STATIC_ASSERT (sizeof (((vlib_buffer_t *) 0)->current_data) == 2,
		 "current_data is an i16");
  STATIC_ASSERT (sizeof (((vlib_buffer_t *) 0)->current_length) == 2,
		 "current_length is a u16");
  STATIC_ASSERT (sizeof (((vlib_buffer_t *) 0)->flags) == 4,
		 "flags is a u32");
  STATIC_ASSERT (STRUCT_OFFSET_OF (vlib_buffer_t, pre_data) +
		     VLIB_BUFFER_PRE_DATA_SIZE ==
		   STRUCT_OFFSET_OF (vlib_buffer_t, data),
		 "pre_data ends where data begins");
  static vlib_buffer_t b;
  clib_memset (&b, 0, sizeof (b));
  vnet_buffer (&b)->oflags = 0xff;
  u8 *p = (u8 *) &b;
  u32 at = ~0, found = 0;
  for (u32 i = 0; i < sizeof (b); i++)
    if (p[i])
      {
	at = i;
	found++;
      }
  if (found != 1 || p[at] != 0xff)
    return 0;
  l->current_data = STRUCT_OFFSET_OF (vlib_buffer_t, current_data);
  l->current_length = STRUCT_OFFSET_OF (vlib_buffer_t, current_length);
  l->flags = STRUCT_OFFSET_OF (vlib_buffer_t, flags);
  l->data = STRUCT_OFFSET_OF (vlib_buffer_t, data);
  l->pre_data_size = VLIB_BUFFER_PRE_DATA_SIZE;
  l->offload_flag = VNET_BUFFER_F_OFFLOAD;
  l->oflags = at;
  l->l4_cksum_oflags =
    VNET_BUFFER_OFFLOAD_F_TCP_CKSUM | VNET_BUFFER_OFFLOAD_F_UDP_CKSUM;
  return 1;
}

/* The core starts once the worker count is known. */
static clib_error_t *
affinity_main_loop_enter (vlib_main_t *vm)
{
  affinity_main_t *am = &affinity_main;
  am->cfg.n_threads = vlib_num_workers () + 1;
  /* Not given (or no affinity section at all): the core's VPP default. */
  if (!am->activity_interval_given)
    am->cfg.activity_report_interval_ms = ~0;
  if (!am->warm_up_given)
    am->cfg.warm_up_ms = ~0;
  am->cfg.start_time = vlib_time_now (vm);
  am->cfg.auth_key_file = (const char *) am->key_file;
  vec_add1 (am->disabled_actions, 0);
  am->cfg.disabled_actions = (const char *) am->disabled_actions;
  if (!affinity_buffer_layout (&am->cfg.buffer_layout))
    return clib_error_return (
      0, "affinity: vnet_buffer (b)->oflags is not one byte of vlib_buffer_t");
  int32_t rv = affinity_rs_init (&am->cfg);
  switch (rv)
    {
    case AFFINITY_RC_OK:
      break;
    case AFFINITY_RC_KEY_FILE_UNREADABLE:
      return clib_error_return (0, "affinity: cannot read auth-key-file %s",
				am->key_file);
    case AFFINITY_RC_KEY_FILE_INVALID:
      return clib_error_return (
	0, "affinity: auth-key-file %s is empty or longer than 4096 bytes",
	am->key_file);
    case AFFINITY_RC_UNKNOWN_ACTION:
      return clib_error_return (
	0, "affinity: unknown disable-action name (known: nat, advertise, "
	   "seq-adjust, interest)");
    default:
      return clib_error_return (0, "affinity: initialisation failed (%d)",
				rv);
    }
  am->initialised = 1;
  udp_register_dst_port (vm, am->cfg.listen_port, affinity_ctl_node.index, 1);
  if (am->cfg.multicast_group)
    affinity_join_group (vm, am->cfg.multicast_group);
  return 0;
}

VLIB_MAIN_LOOP_ENTER_FUNCTION (affinity_main_loop_enter);
