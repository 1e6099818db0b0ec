package fxtest

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

type (
	kmsgRequest  = kmsg.Request
	kmsgResponse = kmsg.Response
)

// joinGroupAuthFailed answers a JoinGroup with GROUP_AUTHORIZATION_FAILED.
func joinGroupAuthFailed(req kmsg.Request) kmsg.Response {
	resp := req.(*kmsg.JoinGroupRequest).ResponseKind().(*kmsg.JoinGroupResponse)
	resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
	return resp
}
