package all

import _ "github.com/tagpipe/tagpipe/inputs/modbus" // register inputs.modbus
