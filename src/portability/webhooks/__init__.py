"""The webhook contract every stage shares: the JSON body, its signature, the egress policy.

It sits below the stages (the matcher renders deltas with it, the consent service checks
webhook URLs and makes secrets with it, the worker builds and signs requests, the reference
receiver verifies them) so that none of them imports another stage for it.
"""
