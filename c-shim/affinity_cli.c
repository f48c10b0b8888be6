/*
 * The plugin's CLI: `set interface affinity`, `show affinity ...` (rendered
 * by the Rust core), `clear affinity stats`, `set affinity`, and the test
 * and benchmark support `test affinity fill`.
 */
#include <vnet/ip/ip4.h>
#include <vnet/ip/format.h>

#include "affinity.h"

static clib_error_t *
affinity_interface_command_fn (vlib_main_t *vm, unformat_input_t *input,
			       vlib_cli_command_t *cmd)
{
  u32 sw_if_index = ~0;
  int enable = 1;
  while (unformat_check_input (input) != UNFORMAT_END_OF_INPUT)
    {
      if (unformat (input, "disable"))
	enable = 0;
      else if (unformat (input, "%U", unformat_vnet_sw_interface,
			 vnet_get_main (), &sw_if_index))
	;
      else
	return clib_error_return (0, "unknown input '%U'",
				  format_unformat_error, input);
    }
  if (sw_if_index == ~0)
    return clib_error_return (0, "usage: set interface affinity <interface> [disable]");
  int rv = affinity_enable_disable (sw_if_index, enable);
  if (rv)
    return clib_error_return (0, "affinity: enable/disable failed (%d)", rv);
  return 0;
}

VLIB_CLI_COMMAND (affinity_interface_command, static) = {
  .path = "set interface affinity",
  .short_help = "set interface affinity <interface> [disable]",
  .function = affinity_interface_command_fn,
};

static clib_error_t *
affinity_show_command_fn (vlib_main_t *vm, unformat_input_t *input,
			  vlib_cli_command_t *cmd)
{
  u8 *args = 0;
  /* Everything after "show affinity" goes to Rust, which parses filters. */
  while (unformat_check_input (input) != UNFORMAT_END_OF_INPUT)
    {
      u8 *word = 0;
      if (!unformat (input, "%s", &word))
	break;
      if (vec_len (args))
	vec_add1 (args, ' ');
      vec_append (args, word);
      vec_free (word);
    }
  vec_add1 (args, 0);
  char *text = affinity_rs_show (vlib_time_now (vm), (char *) args);
  if (text)
    {
      vlib_cli_output (vm, "%s", text);
      affinity_rs_free (text);
    }
  vec_free (args);
  return 0;
}

VLIB_CLI_COMMAND (affinity_show_command, static) = {
  .path = "show affinity",
  .short_help = "show affinity [fixed [proto tcp|udp] [src A] [dst A] [verbose] | wildcard | managers | stats]",
  .function = affinity_show_command_fn,
};

static clib_error_t *
affinity_clear_command_fn (vlib_main_t *vm, unformat_input_t *input,
			   vlib_cli_command_t *cmd)
{
  char *text = affinity_rs_show (vlib_time_now (vm), "clear stats");
  if (text)
    {
      vlib_cli_output (vm, "%s", text);
      affinity_rs_free (text);
    }
  return 0;
}

VLIB_CLI_COMMAND (affinity_clear_command, static) = {
  .path = "clear affinity stats",
  .short_help = "clear affinity stats",
  .function = affinity_clear_command_fn,
};

static clib_error_t *
affinity_set_command_fn (vlib_main_t *vm, unformat_input_t *input,
			 vlib_cli_command_t *cmd)
{
  ip4_address_t a;
  u8 *key = 0;
  u32 id = 1;
  while (unformat_check_input (input) != UNFORMAT_END_OF_INPUT)
    {
      if (unformat (input, "agent-address %U", unformat_ip4_address, &a))
	affinity_rs_set_agent_address (a.as_u32);
      else if (unformat (input, "auth-key %s key-id %u", &key, &id))
	{
	  /* Algorithm 2: HMAC-SHA256 (affinity_api::AuthAlgorithm). */
	  int32_t rv = affinity_rs_set_auth_key (id, 2, key, vec_len (key));
	  vec_free (key);
	  if (rv != AFFINITY_RC_OK)
	    return clib_error_return (0, "affinity: bad key (%d)", rv);
	}
      else
	return clib_error_return (0, "unknown input '%U'",
				  format_unformat_error, input);
    }
  return 0;
}

VLIB_CLI_COMMAND (affinity_set_command, static) = {
  .path = "set affinity",
  .short_help = "set affinity [agent-address <a.b.c.d>] [auth-key <secret> key-id <n>]",
  .function = affinity_set_command_fn,
};

static clib_error_t *
affinity_test_fill_command_fn (vlib_main_t *vm, unformat_input_t *input,
			       vlib_cli_command_t *cmd)
{
  ip4_address_t src, dst, nat = { 0 }, fwd = { 0 };
  u32 n_addrs = 0, n_ports = 1, port = 1024, dport = 80, nport = 0;
  u8 forward = 0;
  if (!unformat (input, "%U %u ports %u %u dst %U %u", unformat_ip4_address,
		 &src, &n_addrs, &port, &n_ports, unformat_ip4_address, &dst,
		 &dport))
    goto usage;
  /* forward 0.0.0.0 is kept: a forward action without an address (the
     core drops its packets, drop-forward-address-zero). */
  if (unformat (input, "forward %U", unformat_ip4_address, &fwd))
    forward = 1;
  else if (!unformat (input, "nat %U %u", unformat_ip4_address, &nat, &nport))
    goto usage;
  u32 n = affinity_rs_test_fill (vlib_time_now (vm), src.as_u32, n_addrs, port,
				 n_ports, dst.as_u32, dport, nat.as_u32, nport,
				 forward, fwd.as_u32);
  vlib_cli_output (vm, "installed %u fixed affinities", n);
  return 0;
usage:
  return clib_error_return (0, "usage: test affinity fill <src> <n-addrs> ports <first> <count> dst <addr> <port> (nat <addr> <port> | forward <addr>)");
}

VLIB_CLI_COMMAND (affinity_test_fill_command, static) = {
  .path = "test affinity fill",
  .short_help = "test affinity fill <src> <n-addrs> ports <first> <count> dst <addr> <port> (nat <addr> <port> | forward <addr>)",
  .function = affinity_test_fill_command_fn,
};
